"""The environment verbs at the top level, for the local daemon and a remote control plane alike (the target
is chosen by flex/cli/target.py): ls, show, start, stop, rebuild. `flex rm` (alias `delete`) is flex/cli/rm.py;
`flex env ...` stays as the older alias group."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from flex.api import Environment

__all__ = ["SERVER", "TOKEN", "register"]

SERVER = typer.Option(None, "--server", help="Control plane URL (default: `flex login`, or the local daemon).")
TOKEN = typer.Option(None, "--token", help="API token for --server.")
_JSON = typer.Option(False, "--json", help="Print JSON.")
_OWNER = typer.Option(None, "--owner", help="Admins: another user's environment.")
_DEBUG = typer.Option(False, "--debug", hidden=True)


def _print_one(env: Environment, json_: bool) -> None:
    from flex.cli.env import _show

    _show(env, "json" if json_ else "table")


def register(app: typer.Typer) -> None:
    @app.command("ls")
    def ls(json_: bool = _JSON, owner: str = _OWNER, server: str = SERVER, token: str = TOKEN,
           debug: bool = _DEBUG) -> None:
        """List your environments."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            envs = list(client.iter_environments(owner=owner))
        if json_:
            typer.echo(json.dumps([e.to_wire() for e in envs], indent=2))
            return
        from flex.cli.fast_ls import table

        for line in table([e.to_wire() for e in envs]):  # the same lines as the fast path's
            typer.echo(line)

    @app.command("show")
    def show(name: str = typer.Argument(..., help="Environment name or id."), json_: bool = _JSON,
             owner: str = _OWNER, server: str = SERVER, token: str = TOKEN, debug: bool = _DEBUG) -> None:
        """Show one environment: spec, phase, conditions."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            _print_one(client.get_environment(name, owner), json_)

    @app.command("start")
    def start(name: str = typer.Argument(..., help="Environment name or id."), json_: bool = _JSON,
              owner: str = _OWNER, server: str = SERVER, token: str = TOKEN, debug: bool = _DEBUG) -> None:
        """Start a stopped environment (its desired phase becomes running)."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            env = client.start_environment(name, owner=owner)
        typer.echo(json.dumps(env.to_wire(), indent=2) if json_ else f"starting {env.metadata.name}")

    @app.command("stop")
    def stop(name: str = typer.Argument(..., help="Environment name or id."), json_: bool = _JSON,
             owner: str = _OWNER, server: str = SERVER, token: str = TOKEN, debug: bool = _DEBUG) -> None:
        """Stop an environment; its container's writable layer and workspace are kept."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            env = client.stop_environment(name, owner=owner)
        typer.echo(json.dumps(env.to_wire(), indent=2) if json_ else f"stopping {env.metadata.name}")

    @app.command("rebuild")
    def rebuild(name: str = typer.Argument(..., help="Environment name."),
                force: bool = typer.Option(False, "--force", hidden=True,
                                           help="Accepted for older scripts: the workspace is kept now."),
                server: str = SERVER, token: str = TOKEN, debug: bool = _DEBUG) -> None:
        """Replace the environment's container with a new one from the same spec (the workspace volume is
        kept; creation hooks run again), then wait until ready."""
        import sys

        from flex.cli.target import connect
        from flex.cli.up_wait import Progress, wait_ready

        client, _ = connect(server, token)
        progress = Progress()
        with client:
            new = client.rebuild_environment(name)  # POST :rebuild: the runner sees a new generation
            try:
                wait_ready(client, name, new.metadata.generation, progress)
            except KeyboardInterrupt:
                print(f"\nstopped waiting; {name} keeps starting", file=sys.stderr)
                raise typer.Exit(130) from None
            progress.done(f"environment {name} is ready")
