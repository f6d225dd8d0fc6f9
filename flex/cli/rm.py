"""`flex rm NAME [--force]` (alias `flex delete`): delete an environment; --force (admins) removes one whose
runner is gone for good."""

from __future__ import annotations

import typer

from flex.cli.envs import SERVER, TOKEN

__all__ = ["register"]

_OWNER = typer.Option(None, "--owner", help="Admins: another user's environment.")


def register(app: typer.Typer) -> None:
    def rm(
        name: str = typer.Argument(..., help="Environment name or id."),
        force: bool = typer.Option(False, "--force", "-f",
                                   help="Admins: remove it now, without its runner tearing it down."),
        owner: str = _OWNER, server: str = SERVER, token: str = TOKEN,
        debug: bool = typer.Option(False, "--debug", hidden=True),
    ) -> None:
        """Delete an environment (its runner tears it down first, unless --force)."""
        from flex.cli.target import connect

        client, _ = connect(server, token)
        with client:
            env = client.delete_environment(name, owner=owner, force=force)
        gone = force or not env.status.runner_id
        typer.echo(f"deleted {env.metadata.name}" if gone else f"deleting {env.metadata.name}")

    app.command("rm")(rm)
    app.command("delete", help="Delete an environment (alias of `flex rm`).")(rm)
