"""`flex config ...`: read and validate devcontainer.json files (the equivalent of
`devcontainer read-configuration`). Calls flex.devcontainer only; imports nothing heavier than typer, so
`flex config read` starts fast."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

__all__ = ["register"]

_WORKSPACE = typer.Option(None, "--workspace-folder", "-w", metavar="DIR",
                          help="Workspace folder to look for the configuration in (default: current directory).")
_CONFIG = typer.Option(None, "--config", "-c", metavar="FILE",
                       help="devcontainer.json to read instead of looking it up in the workspace folder.")
_GIT_ROOT = typer.Option(True, "--mount-workspace-git-root/--no-mount-workspace-git-root",
                         help="Mount the Git root holding the workspace folder, as the reference CLI does.")
# Accepted after the subcommand too (`flex config read --debug`); main() reads it from argv.
_DEBUG = typer.Option(False, "--debug", hidden=True)


def _summary(data: dict[str, Any]) -> list[tuple[str, str]]:
    cfg, ws = data["configuration"], data["workspace"]
    rows = [("config file", ws["configFile"])]
    if "name" in cfg:
        rows.append(("name", cfg["name"]))
    if "image" in cfg:
        rows.append(("image", cfg["image"]))
    elif "build" in cfg or "dockerFile" in cfg:
        build = cfg.get("build", {})
        rows.append(("dockerfile", build.get("dockerfile") or cfg.get("dockerFile", "")))
    elif "dockerComposeFile" in cfg:
        files = cfg["dockerComposeFile"]
        rows.append(("compose", ", ".join(files) if isinstance(files, list) else files))
        rows.append(("service", cfg.get("service", "")))
    rows.append(("workspace folder", ws["workspaceFolder"]))
    if ws["workspaceMount"] is not None:
        rows.append(("workspace mount", ws["workspaceMount"]))
    for feature, options in (cfg.get("features") or {}).items():
        rows.append(("feature", f"{feature} {json.dumps(options)}" if options not in ({}, True) else feature))
    if cfg.get("forwardPorts"):
        rows.append(("forward ports", ", ".join(str(p) for p in cfg["forwardPorts"])))
    for hook in ("initializeCommand", "onCreateCommand", "updateContentCommand", "postCreateCommand",
                 "postStartCommand", "postAttachCommand"):
        if hook in cfg:
            cmd = cfg[hook]
            rows.append((hook, cmd if isinstance(cmd, str) else json.dumps(cmd)))
    for user in ("containerUser", "remoteUser"):
        if user in cfg:
            rows.append((user, cfg[user]))
    if cfg.get("customizations"):
        rows.append(("customizations", ", ".join(cfg["customizations"])))
    return rows


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="config", help="Read and validate devcontainer.json files.", no_args_is_help=True)
    app.add_typer(group, name="config")

    @group.command("read")
    def read(
        workspace_folder: str = _WORKSPACE,
        config: str = _CONFIG,
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: configuration and workspace."),
        mount_git_root: bool = _GIT_ROOT,
        include_features: bool = typer.Option(
            False, "--include-features-configuration",
            help="Also resolve the features (fetching them into the cache) and print them in install order."),
        debug: bool = _DEBUG,
    ) -> None:
        """Find, parse, substitute and validate the devcontainer configuration; print it resolved."""
        from flex.devcontainer.config import read_config

        resolved = read_config(workspace_folder, config, mount_git_root=mount_git_root, allow_no_source=True)
        for warning in resolved.warnings:
            print(f"warning: {resolved.workspace.config_file}: {warning}", file=sys.stderr)
        data = resolved.to_json()
        if include_features:
            from flex.devcontainer.features.feature_sets import feature_sets
            from flex.runner.build.features import feature_cache_dir, resolve_features

            ordered = resolve_features(resolved, progress=lambda line: print(line, file=sys.stderr))
            data["featuresConfiguration"] = {"featureSets": feature_sets(ordered),
                                             "dstFolder": str(feature_cache_dir())}
        if as_json:
            sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
            return
        rows = _summary(data)
        for i, fs in enumerate((data.get("featuresConfiguration") or {}).get("featureSets", [])):
            rows.append((f"install {i + 1}", fs["sourceInformation"]["userFeatureId"]))
        width = max(len(k) for k, _ in rows) + 2
        for key, value in rows:
            print(f"{key + ':':<{width}}{value}")

    @group.command("validate")
    def validate(workspace_folder: str = _WORKSPACE, config: str = _CONFIG, debug: bool = _DEBUG) -> None:
        """Check a devcontainer configuration (syntax, variables, schema); print "ok" or the error."""
        from flex.devcontainer.config import read_config

        resolved = read_config(workspace_folder, config)
        for warning in resolved.warnings:
            print(f"warning: {resolved.workspace.config_file}: {warning}", file=sys.stderr)
        print(f"ok: {resolved.workspace.config_file}")

    @group.command("schema")
    def schema() -> None:
        """Print the JSON Schema flex validates devcontainer.json against."""
        from flex.devcontainer.schema import schema_text

        sys.stdout.write(schema_text())
