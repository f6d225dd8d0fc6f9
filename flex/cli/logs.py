"""`flex logs ENV [-f] [--source container|hooks|build]`: an environment's output, through the control plane
and its runner's tunnel (container: its main process; hooks: lifecycle hooks; build: the image build)."""

from __future__ import annotations

import sys

import typer

from flex.cli.env import _DEBUG, _SERVER, _TOKEN

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("logs")
    def logs(
        name: str = typer.Argument(..., help="Environment name."),
        follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing what is appended."),
        source: str = typer.Option("container", "--source", help="container, hooks or build."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Print an environment's log: its container's output, its lifecycle hooks' or its build's."""
        from flex.cli.target import endpoint
        from flex.client.access import stream_logs
        from flex.errors import UsageError

        if source not in ("container", "hooks", "build"):
            raise UsageError(f"--source {source!r}: expected container, hooks or build")
        url, tok = endpoint(server, token)
        out = sys.stdout.buffer
        for chunk in stream_logs(url, tok, name, source=source, follow=follow):
            out.write(chunk)
            out.flush()
