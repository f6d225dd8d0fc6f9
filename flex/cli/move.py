"""`flex move ENV --to RUNNER` (issue 17.5): move an environment to another runner through the control plane
(POST .../{name}:move), and by default wait until it is Ready there. A failed move leaves it where it was."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import typer

from flex.cli.envs import SERVER, TOKEN

if TYPE_CHECKING:
    from flex.api import Environment
    from flex.client import FlexClient

__all__ = ["register", "wait_moved"]

_POLL = 0.5


def _selector(pairs: list[str]) -> dict[str, str]:
    from flex.errors import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--selector {pair!r} is not KEY=VALUE", hint="e.g. --selector zone=b")
        out[key] = value
    return out


def wait_moved(client: FlexClient, name: str, *, timeout: float, owner: str | None = None) -> Environment:
    """Until the move is over: Ready on the new runner (its old copy then goes), or failed (FlexError, exit 1)."""
    import sys

    from flex.errors import FlexError, Unavailable

    deadline = time.monotonic() + timeout
    said = ""
    while True:
        try:
            env = client.get_environment(name, owner)
        except Unavailable as err:  # the server restarting: the move goes on without it, keep waiting
            if time.monotonic() > deadline:
                raise
            if said != str(err):
                print(f"  waiting for the server: {err.message}", file=sys.stderr)
                said = str(err)
            time.sleep(_POLL)
            continue
        moving = env.status.condition("Moving")
        note = f"{moving.reason}: {moving.message}" if moving is not None else env.status.phase
        if note != said:
            print(f"  {note}", file=sys.stderr)
            said = note
        if moving is not None and moving.status == "False":
            if moving.reason == "MoveFailed":
                raise FlexError(moving.message, hint=f"see `flex show {name}`; it runs where it was")
            return env
        if moving is not None and moving.reason == "RemovingOldCopy":
            return env  # Ready on the new runner: what the user waits for
        if time.monotonic() > deadline:
            raise Unavailable(f"{name} is still moving after {timeout:.0f} s",
                              hint=f"follow it with `flex show {name}`")
        time.sleep(_POLL)


def register(app: typer.Typer) -> None:
    @app.command("move")
    def move(name: str = typer.Argument(..., help="Environment name."),
             to: str = typer.Option(None, "--to", help="The runner to move it to (name or id)."),
             selector: list[str] = typer.Option([], "--selector", help="Instead of --to: a runner with this "
                                                "label (KEY=VALUE, repeatable), chosen as placement chooses."),
             json_: bool = typer.Option(False, "--json", help="Print the environment as JSON."),
             no_wait: bool = typer.Option(False, "--no-wait", help="Return once the move is asked for."),
             timeout: float = typer.Option(900, "--timeout", help="Seconds to wait for Ready on the new runner."),
             owner: str = typer.Option(None, "--owner", help="Admins: another user's environment."),
             server: str = SERVER, token: str = TOKEN) -> None:
        """Move an environment to another runner: stopped, backed up, restored there and started; its old
        copy goes once it is Ready there. Both runners must use the server's shared backup repository."""
        from flex.cli.target import connect
        from flex.errors import UsageError

        if (to is None) == (not selector):
            raise UsageError("give --to RUNNER or --selector KEY=VALUE (not both)",
                             hint="e.g. `flex move web --to r2`; `flex runner ls` lists runners")
        client, _ = connect(server, token)
        with client:
            env = client.move_environment(name, to, _selector(selector) if selector else None, owner=owner)
            target = to or (env.spec.move.to if env.spec.move is not None else "?")
            if not no_wait:
                env = wait_moved(client, name, timeout=timeout, owner=owner)
            if json_:
                typer.echo(json.dumps(env.to_wire(), indent=2))
            elif no_wait:
                typer.echo(f"moving {name} to runner {target}")
            else:
                typer.echo(f"{name} moved to runner {target}")
