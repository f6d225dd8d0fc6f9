"""`flex login` / `flex logout`: remember (or forget) which control plane the CLI talks to, and with which token
(checked first). Without a saved login, verbs talk to the local daemon."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("login")
    def login(
        server: str = typer.Option(..., "--server", help="Control plane URL, e.g. http://127.0.0.1:8080."),
        token: str = typer.Option(None, "--token", help="API token (default: read from stdin).",
                                  envvar="FLEX_TOKEN"),
        debug: bool = typer.Option(False, "--debug", hidden=True),
    ) -> None:
        """Check a token against a control plane and save both for later commands."""
        import sys

        from flex.client import FlexClient
        from flex.client.config import ClientConfig, save_config

        if not token:
            token = sys.stdin.readline().strip()
        from flex.cli.target import check_server_url

        server = check_server_url(server)
        with FlexClient(server, token) as client:
            me = client.whoami()
        path = save_config(ClientConfig(server.rstrip("/"), token))  # checked first: a bad login is not saved
        typer.echo(f"logged in to {server} as {me.name}{' (admin)' if me.admin else ''}; saved to {path}")

    @app.command("logout")
    def logout() -> None:
        """Forget the saved control plane and token: later commands use the local daemon again."""
        from flex.client.config import config_path

        path = config_path()
        if path.exists():
            path.unlink()
            typer.echo(f"logged out (removed {path}); commands now use the local daemon")
        else:
            typer.echo("not logged in; commands use the local daemon")
