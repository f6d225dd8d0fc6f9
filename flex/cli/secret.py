"""`flex secret set|ls|rm`: your write-only environment variables on the control plane.

The value is read from stdin (piped) or a hidden prompt, never from the command line, where `ps` and shell
history would keep it. Talks to the control plane through flex.client only, like `flex env`.
"""

from __future__ import annotations

import json

import typer

__all__ = ["read_value", "register"]

_SERVER = typer.Option(None, "--server", help="Control plane URL (default: FLEX_URL or `flex login`).")
_TOKEN = typer.Option(None, "--token", help="API token (default: FLEX_TOKEN or `flex login`).")
_DEBUG = typer.Option(False, "--debug", hidden=True)


def read_value(name: str) -> str:
    """A piped value (one trailing newline dropped, as `echo` adds one), or a hidden prompt on a terminal."""
    import getpass
    import sys

    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name}: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="secret", help="Write-only environment variables (values never shown).",
                        no_args_is_help=True)
    app.add_typer(group, name="secret")

    @group.command("set")
    def set_(
        name: str = typer.Argument(..., help="Variable name, e.g. GITHUB_TOKEN."),
        on_argv: str = typer.Argument(None, hidden=True, show_default=False),
        env: list[str] = typer.Option(None, "--env", "-e",
                                      help="An environment that gets it, repeatable (default: all of yours)."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Create or replace a secret; the value comes from stdin or a hidden prompt."""
        from flex.cli.env import _client
        from flex.errors import UsageError

        if on_argv is not None:  # caught here so that click does not echo it back in its own error
            raise UsageError("a secret value is never taken from the command line (ps and shell history keep it)",
                             hint=f"pipe it in (flex secret set {name} < file) or type it at the prompt")
        value = read_value(name)
        with _client(server, token) as c:
            secret = c.put_secret(name, value, env or ["*"])
        typer.echo(f"secret {secret.name} set for {', '.join(secret.environments)}")

    @group.command("ls")
    def ls(
        output: str = typer.Option("table", "--output", "-o", help="table or json."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """List your secrets: names and scopes."""
        from flex.cli.env import _client

        with _client(server, token) as c:
            items = c.list_secrets().items
        if output == "json":
            typer.echo(json.dumps([s.to_wire() for s in items], indent=2))
            return
        width = max([len("NAME"), *(len(s.name) for s in items)])
        typer.echo(f"{'NAME':<{width}}  ENVIRONMENTS  UPDATED")
        for s in items:
            typer.echo(f"{s.name:<{width}}  {','.join(s.environments):<12}  {s.updated_at:%Y-%m-%d %H:%M}")

    @group.command("rm")
    def rm(name: str = typer.Argument(...), server: str = _SERVER, token: str = _TOKEN,
           debug: bool = _DEBUG) -> None:
        """Delete a secret."""
        from flex.cli.env import _client

        with _client(server, token) as c:
            c.delete_secret(name)
        typer.echo(f"secret {name} deleted")
