"""`flex exec ENV [-i] [-t] -- CMD...`: run a command in an environment, through the control plane and its
runner's tunnel; the command's exit code is ours (as `docker exec`). Messages: flex/api/access.py."""

from __future__ import annotations

from typing import IO

import typer

from flex.cli.env import _DEBUG, _SERVER, _TOKEN

__all__ = ["register", "run_exec"]


def run_exec(server: str, token: str | None, name: str, command: list[str], *, interactive: bool, tty: bool,
             input: IO[bytes] | None = None, out: IO[bytes] | None = None, err: IO[bytes] | None = None) -> int:
    """Run ``command`` in environment ``name``; returns its exit code (raises FlexError when it cannot run).
    ``input``: a file sent as the command's stdin instead of ours; ``out``/``err``: where its output goes
    (default: our stdout and stderr)."""
    import sys

    from websockets.exceptions import ConnectionClosed

    from flex.cli.exec_session import carry
    from flex.client.access import connect_environment
    from flex.errors import UsageError

    if tty and not sys.stdin.isatty():
        raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run from a terminal")
    ws = connect_environment(server, token, name, "exec")
    return carry(ws, ConnectionClosed, name, command, interactive=interactive, tty=tty, input=input, out=out, err=err)


def register(app: typer.Typer) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_(
        name: str = typer.Argument(..., help="Environment name."),
        command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
        interactive: bool = typer.Option(False, "-i", "--interactive", help="Send our stdin to the command."),
        tty: bool = typer.Option(False, "-t", "--tty", help="Give the command a terminal."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Run a command in an environment as its remoteUser; exits with the command's exit code."""
        from flex.cli.target import endpoint

        url, tok = endpoint(server, token)
        if command[:1] == ["--"]:  # options end at NAME; a "--" after it is the usual spelling, not the command
            command = command[1:]
        if not command:
            from flex.errors import UsageError

            raise UsageError("no command given", hint="flex exec ENV -- CMD [ARG...]")
        raise typer.Exit(run_exec(url, tok, name, command, interactive=interactive, tty=tty))
