"""`flex ports ENV`: an environment's ports (forwardPorts and spec.ports) and their preview URLs."""

from __future__ import annotations

import typer

from flex.cli.env import _DEBUG, _SERVER, _TOKEN

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("ports")
    def ports(
        name: str = typer.Argument(..., help="Environment name."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """List an environment's ports and their preview URLs (forward one with flex port-forward)."""
        from flex.cli.target import endpoint
        from flex.client import FlexClient

        url, tok = endpoint(server, token)
        with FlexClient(url, tok) as c:
            env = c.get_environment(name)
        typer.echo(f"{'PORT':<7}URL")
        for p in env.status.ports:
            typer.echo(f"{p.port:<7}{p.url or '-'}")
