"""`flex rm NAME [--force]`: delete an environment; --force (admins) removes one whose runner is gone for good."""

from __future__ import annotations

import typer

from flex.cli.env import _DEBUG, _OWNER, _SERVER, _TOKEN, _client

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("rm")
    def rm(
        name: str = typer.Argument(..., help="Environment name or id."),
        force: bool = typer.Option(False, "--force", "-f",
                                   help="Admins: remove it now, without its runner tearing it down."),
        owner: str = _OWNER, server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Delete an environment (its runner tears it down first, unless --force)."""
        with _client(server, token) as c:
            env = c.delete_environment(name, owner=owner, force=force)
        gone = force or not env.status.runner_id
        typer.echo(f"deleted {env.metadata.name}" if gone else f"deleting {env.metadata.name}")
