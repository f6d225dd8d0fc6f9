"""Finding, reading and resolving a devcontainer.json, as `devcontainer read-configuration` does.

Owns the lookup rules, the read pipeline and the spec's defaults:

    find_config(folder)  .devcontainer/devcontainer.json, else .devcontainer.json, else the only
                         .devcontainer/<name>/devcontainer.json (several: an error listing them)
    read_config(...)     bytes → JSONC (jsonc.py) → workspace folder and mount → variables
                         (substitute.py) → schema (schema.py) → legacy properties moved → ResolvedConfig

The workspace defaults follow the reference CLI on Linux: the mount source is the Git root holding
the workspace folder (``git rev-parse --show-cdup``), mounted at ``/workspaces/<root name>``, and the
workspace folder is the same path below it; no ``consistency=`` (the reference adds one only on macOS
and Windows). With Docker Compose there is no mount and the folder defaults to ``/``.

Untrusted input: a config found in a workspace must not be a symlink leading out of it (the file's
content ends up in error messages and in what a runner builds), and files over ``MAX_BYTES`` are refused.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.devcontainer import jsonc, schema
from flex.devcontainer.substitute import HostContext, substitute, substitute_string
from flex.errors import FlexError, InvalidConfiguration, NotFound, PermissionDenied, UsageError

__all__ = [
    "MAX_BYTES",
    "ResolvedConfig",
    "Workspace",
    "candidates",
    "devcontainer_id",
    "find_config",
    "git_root",
    "parse_config",
    "read_config",
    "workspace_defaults",
]

MAX_BYTES = 1 << 20
_LEGACY = ("extensions", "settings", "devPort")


@dataclass(frozen=True)
class Workspace:
    """Where the workspace lives in the container, how it gets there, and which file said so."""

    workspace_folder: str
    workspace_mount: str | None
    config_file: str

    def to_json(self) -> dict[str, Any]:
        return {"workspaceFolder": self.workspace_folder, "workspaceMount": self.workspace_mount,
                "configFile": self.config_file}


@dataclass(frozen=True)
class ResolvedConfig:
    """A devcontainer.json after lookup, parsing, substitution and validation."""

    configuration: dict[str, Any]
    workspace: Workspace
    local_workspace_folder: str
    devcontainer_id: str
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"configuration": self.configuration, "workspace": self.workspace.to_json()}


def _primary(folder: Path) -> list[Path]:
    return [p for p in (folder / ".devcontainer" / "devcontainer.json", folder / ".devcontainer.json")
            if p.is_file()]


def _named(folder: Path) -> list[Path]:
    sub = folder / ".devcontainer"
    try:
        return sorted(p / "devcontainer.json" for p in sub.iterdir()
                      if p.is_dir() and (p / "devcontainer.json").is_file())
    except OSError:  # no .devcontainer directory, or unreadable
        return []


def candidates(folder: Path) -> list[Path]:
    """Every devcontainer.json the spec's lookup rules find in ``folder``, in priority order."""
    return _primary(folder) + _named(folder)


def find_config(folder: Path) -> Path:
    """The configuration of a workspace folder, by the lookup rules above."""
    if not folder.is_dir():
        raise NotFound(f"workspace folder {str(folder)!r} does not exist or is not a directory")
    primary = _primary(folder)
    if primary:
        return primary[0]  # as the reference CLI: .devcontainer/devcontainer.json, then .devcontainer.json
    named = _named(folder)
    if len(named) > 1:
        listed = ", ".join(str(p.relative_to(folder)) for p in named)
        raise UsageError(f"several devcontainer configurations in {folder}: {listed}",
                         hint=f"choose one with --config, e.g. --config {named[0].relative_to(folder)}")
    if not named:
        raise NotFound(
            f"no devcontainer configuration in {folder}",
            hint="create .devcontainer/devcontainer.json (or .devcontainer.json), or pass --config FILE",
        )
    return named[0]


def devcontainer_id(local_folder: str, config_file: str) -> str:
    """``${devcontainerId}``: the reference CLI's id of a (workspace folder, config file) pair.

    sha256 of the JSON of the container's two id labels (keys sorted, no spaces), as a base-32 number
    (digits 0-9a-v) padded to 52 digits.
    """
    labels = {"devcontainer.config_file": config_file, "devcontainer.local_folder": local_folder}
    text = json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    n = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")
    digits = "0123456789abcdefghijklmnopqrstuv"
    out = ""
    while n:
        n, r = divmod(n, 32)
        out = digits[r] + out
    return out.rjust(52, "0")


def git_root(folder: str) -> str | None:
    """The top of the Git work tree holding ``folder``, as the reference CLI finds it; None if none."""
    git = shutil.which("git")
    if git is None:  # the reference's own fallback when it cannot run git: look for .git/config upwards
        d = folder
        while True:
            if os.path.isfile(os.path.join(d, ".git", "config")):
                return d
            parent = os.path.dirname(d)
            if parent == d:
                return None
            d = parent
    try:
        out = subprocess.run([git, "rev-parse", "--show-cdup"], cwd=folder, capture_output=True, text=True,
                             timeout=30, check=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return os.path.normpath(os.path.join(folder, out.stdout.strip()))


def _quote(part: str, value: str) -> str:
    q = '"' if "," in value else ""
    return f"{q}{part}={value}{q}"


def workspace_defaults(raw: Mapping[str, Any], local_folder: str, *, mount_git_root: bool = True
                       ) -> tuple[str, str | None]:
    """(workspaceFolder, workspaceMount) before substitution, from the raw config and the host folder."""
    if "dockerComposeFile" in raw:
        folder = raw.get("workspaceFolder")
        return (folder if isinstance(folder, str) and folder else "/"), None
    folder = raw.get("workspaceFolder") if isinstance(raw.get("workspaceFolder"), str) else None
    mount = raw.get("workspaceMount") if isinstance(raw.get("workspaceMount"), str) else None
    if folder and "workspaceMount" in raw:
        return folder, mount
    root = (git_root(local_folder) if mount_git_root else None) or local_folder
    target = posixpath.join("/workspaces", posixpath.basename(root))
    if not folder:
        rel = os.path.relpath(local_folder, root)
        folder = posixpath.normpath(posixpath.join(target, rel)) if rel != "." else target
    if "workspaceMount" not in raw:
        mount = f"type=bind,{_quote('source', root)},{_quote('target', target)}"
    return folder, mount


def _read_text(path: Path, shown: str) -> str:
    try:
        # O_NONBLOCK: a FIFO put where the config should be must not hang flex; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise NotFound(f"{shown} does not exist") from err
    except PermissionError as err:
        raise PermissionDenied(f"{shown} cannot be read: permission denied") from err
    except OSError as err:
        raise FlexError(f"{shown} cannot be read: {err.strerror}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidConfiguration(f"{shown} is not a regular file", details={"file": shown})
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise InvalidConfiguration(f"{shown} is larger than {MAX_BYTES >> 20} MiB: not a devcontainer.json",
                                   details={"file": shown})
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = data[: err.start]
        line = prefix.count(b"\n") + 1
        column = len(prefix[prefix.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise InvalidConfiguration(f"{shown}:{line}:{column}: not valid UTF-8",
                                   details={"file": shown, "line": line, "column": column}) from err


def _move_legacy(config: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """extensions, settings, devPort → customizations.vscode, exactly as the reference CLI moves them."""
    if not any(k in config for k in _LEGACY):
        return config
    out = dict(config)
    custom = dict(out.get("customizations") or {})
    vscode = dict(custom.get("vscode") or {})
    if "extensions" in out:
        vscode["extensions"] = list(vscode.get("extensions") or []) + list(out.pop("extensions"))
        warnings.append("'extensions' is deprecated: moved to customizations.vscode.extensions")
    if "settings" in out:
        vscode["settings"] = {**out.pop("settings"), **(vscode.get("settings") or {})}
        warnings.append("'settings' is deprecated: moved to customizations.vscode.settings")
    if "devPort" in out and "devPort" not in vscode:
        vscode["devPort"] = out.pop("devPort")
        warnings.append("'devPort' is deprecated: moved to customizations.vscode.devPort")
    custom["vscode"] = vscode
    out["customizations"] = custom
    return out


def _parse(text: str, shown: str) -> jsonc.Document:
    try:
        return jsonc.parse(text)
    except jsonc.JSONCSyntaxError as err:
        raise InvalidConfiguration(f"{shown}:{err.line}:{err.column}: {err.message}",
                                   details={"file": shown, "line": err.line, "column": err.column}) from err


def parse_config(text: str, source: str = "devcontainer.json") -> dict[str, Any]:
    """Parse and validate a configuration given as text, with no host around it (an inline config sent
    to the control plane). Variables are left as written and checked as such; ``read_config`` is the
    full pipeline. Raises InvalidConfiguration naming ``source``, line and column."""
    doc = _parse(text, source)
    schema.validate(doc.value, doc, source)
    config: dict[str, Any] = doc.value
    return config


def read_config(workspace_folder: str | os.PathLike[str] | None = None,
                config_file: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None, mount_git_root: bool = True,
                cwd: str | os.PathLike[str] | None = None, allow_no_source: bool = False,
                validate: bool = True) -> ResolvedConfig:
    """Find (unless ``config_file`` is given), parse, substitute, validate and resolve a configuration.

    Relative paths are taken from ``cwd`` (default: the current directory), which is also the default
    workspace folder. ``allow_no_source``: a config with no image, Dockerfile or compose file is read
    with a warning instead of refused. ``validate=False`` skips the schema (jsonschema costs ~60 ms to load):
    only for a caller that trusts nothing it read until it has proven these bytes were validated before, as
    `flex up`'s lean path does with the environment's configHash. Raises NotFound, UsageError (several
    candidates), InvalidConfiguration.
    """
    base = os.path.abspath(cwd if cwd is not None else os.getcwd())
    local_folder = os.path.normpath(os.path.join(base, workspace_folder if workspace_folder is not None else "."))
    if config_file is not None:
        path = Path(os.path.normpath(os.path.join(base, config_file)))
        if not path.exists():
            raise NotFound(f"config file {str(path)!r} does not exist")
    else:
        path = find_config(Path(local_folder))
        real, inside = os.path.realpath(path), os.path.realpath(local_folder)
        if os.path.commonpath([real, inside]) != inside:
            raise InvalidConfiguration(f"{path} leads outside the workspace folder (to {real})",
                                       hint="pass --config to read a file elsewhere on purpose",
                                       details={"file": str(path)})
    shown = str(path)
    text = _read_text(path, shown)
    doc = _parse(text, shown)
    raw = doc.value
    if not isinstance(raw, dict):
        if validate:
            schema.validate(raw, doc, shown)  # says "expected a devcontainer.json object"
        raise InvalidConfiguration(f"{shown}: expected a JSON object", details={"file": shown, "pointer": ""})
    env = os.environ if env is None else env
    folder_raw, mount_raw = workspace_defaults(raw, local_folder, mount_git_root=mount_git_root)
    ident = devcontainer_id(local_folder, shown)
    pre = HostContext(env=env, local_workspace_folder=local_folder, container_workspace_folder=folder_raw,
                      devcontainer_id=ident, config_file=shown)
    try:
        container_folder = substitute_string(folder_raw, pre, pointer="/workspaceFolder")
        ctx = HostContext(env=env, local_workspace_folder=local_folder, container_workspace_folder=container_folder,
                          devcontainer_id=ident, config_file=shown)
        resolved = substitute(raw, ctx)
    except InvalidConfiguration as err:
        pointer = err.details.get("pointer", "")
        where = doc.position(pointer) or jsonc.Position(1, 1)
        raise InvalidConfiguration(f"{shown}:{where.line}:{where.column}: {pointer}: {err.message}", hint=err.hint,
                                   details={"file": shown, "pointer": pointer, "line": where.line,
                                            "column": where.column}) from err
    if validate:
        schema.validate(resolved, doc, shown, require_source=not allow_no_source)
    if isinstance(resolved.get("workspaceFolder"), str):
        container_folder = resolved["workspaceFolder"]
    # The computed default mount is a host path, not config text: like the reference, not substituted.
    mount = resolved.get("workspaceMount", mount_raw)
    warnings: list[str] = []
    if not schema.has_source(resolved):
        warnings.append("no image, build.dockerfile or dockerComposeFile: usable only to attach to an existing "
                        "container; flex cannot build or start it")
    if config_file is None:
        others = [str(c.relative_to(local_folder)) for c in candidates(Path(local_folder)) if c != path]
        if others:
            warnings.append(f"also found {', '.join(others)}: pass --config to read one of them")
    resolved = _move_legacy(resolved, warnings)
    return ResolvedConfig(
        configuration=resolved,
        workspace=Workspace(workspace_folder=container_folder, workspace_mount=mount, config_file=shown),
        local_workspace_folder=local_folder,
        devcontainer_id=ident,
        warnings=tuple(warnings),
    )
