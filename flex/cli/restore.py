"""`flex restore BACKUP --target DIR`: a backup into a new directory, visible only when whole (docs/backup.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from flex.cli.backup import _DEBUG, _PWFILE, _REPO, _SERVER, _TIMEOUT, _TOKEN, _WAIT, _open, _size

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("restore")
    def restore_(
        backup_id: str = typer.Argument(..., metavar="BACKUP", help="An environment's backup (bk_...), or with "
                                        "--target a repository's id, unique prefix, or latest."),
        as_: str = typer.Option(None, "--as", help="The new environment's name (default ENV-xxxxxx)."),
        env: str = typer.Option(None, "--env", help="The environment the backup is of (default: search)."),
        target: Path = typer.Option(None, "--target", "-t", help="A new directory to restore into (from the "
                                    "repository directly)."),
        id_offset: int = typer.Option(0, "--id-offset", help="Added to owners (the target's id range)."),
        to: str = typer.Option(None, "--to", help="The runner to restore on (name or id); a backup in the "
                               "server's shared repository restores on any runner that uses it."),
        selector: list[str] = typer.Option([], "--selector", help="Instead of the backup's runnerSelector: a "
                                           "runner with this label (KEY=VALUE, repeatable)."),
        repo: str = _REPO, password_file: Path = _PWFILE, server: str = _SERVER, token: str = _TOKEN,
        wait: bool = _WAIT, timeout: float = _TIMEOUT, debug: bool = _DEBUG,
    ) -> None:
        """Restore an environment's backup as a new environment (its runner does it), or with --target a
        repository's backup into a new directory; either appears only when whole."""
        from flex.backup import restore
        from flex.errors import UsageError

        if target is None:
            if not backup_id.startswith("bk_"):
                raise UsageError(f"{backup_id!r} is not an environment's backup (bk_...)",
                                 hint="restore a repository's backup into a directory with --target DIR")
            from flex.cli import backup_env
            from flex.cli.move import _selector
            from flex.cli.target import connect

            client, _ = connect(server, token)
            with client:
                backup_env.restore(client, backup_id, as_, env, wait=wait, timeout=timeout, runner=to,
                                   selector=_selector(selector) if selector else None)
            return

        r = _open(repo, password_file)
        s = restore(r, r.find_snapshot(backup_id), target, id_offset=id_offset)
        r.close()
        typer.echo(f"restored {s.files} files, {s.dirs} directories, {_size(s.bytes)} into {target}")
        for p in s.skipped_devices:
            typer.echo(f"warning: device node {p} not restored", err=True)
