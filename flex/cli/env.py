"""`flex env ...`: environments through the REST API (create, list, get, start, stop, delete, watch).

Talks to the control plane through flex.client only; the server and token come from --server/--token,
FLEX_URL/FLEX_TOKEN, or `flex login`. Errors are flex.errors kinds, so exit codes are the documented ones.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from flex.api import Environment
    from flex.client import FlexClient

__all__ = ["register"]

_SERVER = typer.Option(None, "--server", help="Control plane URL (default: FLEX_URL, `flex login`, or the daemon).")
_TOKEN = typer.Option(None, "--token", help="API token (default: FLEX_TOKEN or `flex login`).")
_OUTPUT = typer.Option("table", "--output", "-o", help="table or json.")
_OWNER = typer.Option(None, "--owner", help="Admins: act on another user's environment.")
_DEBUG = typer.Option(False, "--debug", hidden=True)


def _client(server: str | None, token: str | None) -> FlexClient:
    from flex.cli.target import connect

    return connect(server, token)[0]  # --server, FLEX_URL or `flex login`; else the local daemon


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    from flex.errors import UsageError

    out: dict[str, str] = {}
    for item in values or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"{what}: {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _resources(env: Environment) -> str:
    r = env.spec.resources
    return (f"{r.cpus:g} cpus, {r.memory / 2**30:g}Gi memory, {r.disk / 2**30:g}Gi disk "
            "(the disk limit is enforced by the runner)")


def _show(env: Environment, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(env.to_wire(), indent=2))
        return
    m, s = env.metadata, env.status
    rows = [("name", m.name), ("id", m.id), ("owner", m.owner), ("desired", env.spec.desired_phase),
            ("phase", "deleting" if m.deleting else s.phase),
            ("generation", f"{m.generation} (observed {s.observed_generation})"),
            ("resourceVersion", str(m.resource_version)), ("runner", s.runner_id or "-"),
            ("resources", _resources(env))]
    rows += [(f"condition {c.type}", f"{c.status} {c.reason} {c.message}".rstrip()) for c in s.conditions]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="env", help="Manage environments on a control plane.", no_args_is_help=True)
    app.add_typer(group, name="env")

    @group.command("create")
    def create(
        name: str = typer.Argument(..., help="Environment name (lower case, digits, '-')."),
        git: str = typer.Option(None, "--git", help="Repository URL."),
        ref: str = typer.Option(None, "--ref", help="Branch, tag or commit."),
        path: str = typer.Option(None, "--path", help="A local folder (desktop runners)."),
        devcontainer: str = typer.Option(None, "--devcontainer", help="devcontainer.json path in the source."),
        stopped: bool = typer.Option(False, "--stopped", help="Create it stopped."),
        cpus: float = typer.Option(None, "--cpus"),
        memory: str = typer.Option(None, "--memory", help="e.g. 4Gi"),
        disk: str = typer.Option(None, "--disk", help="e.g. 20Gi"),
        docker: bool = typer.Option(False, "--docker", help="Run Docker inside."),
        env: list[str] = typer.Option(None, "--env", "-e", help="KEY=VALUE, repeatable."),
        port: list[int] = typer.Option(None, "--port", "-p", help="Port to expose, repeatable."),
        label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE, repeatable."),
        selector: list[str] = typer.Option(None, "--runner-selector", help="KEY=VALUE a runner must have."),
        output: str = _OUTPUT, server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Create an environment."""
        from flex.errors import UsageError

        if (git is None) == (path is None):
            raise UsageError("give exactly one of --git URL or --path DIR")
        spec: dict[str, Any] = {"source": {k: v for k, v in (("git", git), ("ref", ref), ("path", path)) if v},
                                "desiredPhase": "stopped" if stopped else "running", "docker": docker,
                                "env": _pairs(env, "--env"), "ports": [{"port": p} for p in port or []],
                                "runnerSelector": _pairs(selector, "--runner-selector")}
        if devcontainer:
            spec["devcontainer"] = {"path": devcontainer}
        resources = {k: v for k, v in (("cpus", cpus), ("memory", memory), ("disk", disk)) if v is not None}
        if resources:
            spec["resources"] = resources
        with _client(server, token) as c:
            _show(c.create_environment(name, spec, labels=_pairs(label, "--label")), output)

    @group.command("list")
    def list_(
        label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE to match, repeatable."),
        owner: str = _OWNER, output: str = _OUTPUT, server: str = _SERVER, token: str = _TOKEN,
        debug: bool = _DEBUG,
    ) -> None:
        """List environments."""
        with _client(server, token) as c:
            envs = list(c.iter_environments(owner=owner, labels=_pairs(label, "--label") or None))
        if output == "json":
            typer.echo(json.dumps([e.to_wire() for e in envs], indent=2))
            return
        typer.echo(f"{'NAME':<24} {'OWNER':<12} {'DESIRED':<8} {'PHASE':<9} {'GEN':>4} {'OBS':>4}  RUNNER")
        for e in envs:
            phase = "deleting" if e.metadata.deleting else e.status.phase
            typer.echo(f"{e.metadata.name:<24} {e.metadata.owner:<12} {e.spec.desired_phase:<8} {phase:<9} "
                       f"{e.metadata.generation:>4} {e.status.observed_generation:>4}  {e.status.runner_id or '-'}")

    @group.command("get")
    def get(name: str, owner: str = _OWNER, output: str = _OUTPUT, server: str = _SERVER, token: str = _TOKEN,
            debug: bool = _DEBUG) -> None:
        """Show one environment."""
        with _client(server, token) as c:
            _show(c.get_environment(name, owner), output)

    @group.command("start")
    def start(name: str, owner: str = _OWNER, output: str = _OUTPUT, server: str = _SERVER,
              token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """Set an environment's desired phase to running."""
        with _client(server, token) as c:
            _show(c.start_environment(name, owner=owner), output)

    @group.command("stop")
    def stop(name: str, owner: str = _OWNER, output: str = _OUTPUT, server: str = _SERVER,
             token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """Set an environment's desired phase to stopped."""
        with _client(server, token) as c:
            _show(c.stop_environment(name, owner=owner), output)

    @group.command("delete")
    def delete(name: str, owner: str = _OWNER, server: str = _SERVER, token: str = _TOKEN,
               debug: bool = _DEBUG) -> None:
        """Delete an environment (its runner tears it down first)."""
        with _client(server, token) as c:
            env = c.delete_environment(name, owner=owner)
        typer.echo(f"deleting {env.metadata.name}" if env.status.runner_id else f"deleted {env.metadata.name}")

    @group.command("watch")
    def watch(resource_version: int = typer.Option(None, "--resource-version", help="Start after this version."),
              timeout: float = typer.Option(None, "--timeout", help="Stop after this many seconds."),
              server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG) -> None:
        """Print changes to your environments as they happen (one JSON line each)."""
        with _client(server, token) as c:
            for ev in c.watch_environments(resource_version, timeout=timeout):
                typer.echo(json.dumps({"type": ev.type, "name": ev.object.metadata.name,
                                       "resourceVersion": ev.object.metadata.resource_version,
                                       "generation": ev.object.metadata.generation}), nl=True)
