"""`flex backup create|ls|verify|rm|forget`: a backup repository on this machine or in S3 (`flex restore`: restore.py).

Works on the repository directly through flex.backup (docs/backup.md): `--repo` (or FLEX_BACKUP_REPO) is a
directory (default FLEX_HOME/backups) or `s3:http[s]://HOST/BUCKET[/PREFIX]` with AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY. The password comes from FLEX_BACKUP_PASSWORD or a password file (default
FLEX_HOME/backup.key, created owner-only with a random password by the first `create`); it is never taken
from the command line. Backups of an environment are tagged `env:NAME`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from flex.backup import Repository

__all__ = ["register"]

_REPO = typer.Option(None, "--repo", "-r", envvar="FLEX_BACKUP_REPO",
                     help="Repository: a directory or s3:http[s]://HOST/BUCKET[/PREFIX] (default FLEX_HOME/backups).")
_PWFILE = typer.Option(None, "--password-file", help="File holding the repository password "
                       "(default FLEX_HOME/backup.key; FLEX_BACKUP_PASSWORD wins).")
_DEBUG = typer.Option(False, "--debug", hidden=True)
_SERVER = typer.Option(None, "--server", help="Control plane URL (default: `flex login`, or the local daemon).")
_TOKEN = typer.Option(None, "--token", help="API token for --server.")
_WAIT = typer.Option(True, "--wait/--no-wait", help="Follow it until done (progress on stderr).")
_TIMEOUT = typer.Option(3600.0, "--timeout", help="Seconds to wait.")


def _password(path: Path | None, create: bool) -> bytes:
    from flex.errors import FailedPrecondition
    from flex.home import flex_home

    env = os.environ.get("FLEX_BACKUP_PASSWORD")
    if env:
        return env.encode()
    path = path or flex_home() / "backup.key"
    if not path.exists():
        if not create:
            raise FailedPrecondition(f"no backup password: {path} does not exist",
                                     hint="set FLEX_BACKUP_PASSWORD or pass --password-file")
        import secrets

        from flex.atomic import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return path.read_bytes().strip()


def _open(repo: str | None, pwfile: Path | None, *, create: bool = False) -> Repository:
    from flex.backup import Repository, open_store

    store = open_store(repo)
    password = _password(pwfile, create)
    return Repository.open_or_init(store, password) if create else Repository.open(store, password)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="backup", help="Incremental, deduplicated, encrypted backups.", no_args_is_help=True)
    app.add_typer(group, name="backup")

    @group.command("create")
    def create(
        env: str = typer.Argument(..., help="The environment to back up (through its runner), or with --path the "
                                            "name the backup is kept under (tag env:NAME)."),
        path: list[Path] = typer.Option(None, "--path", "-p", help="A directory to back up, repeatable (backs up "
                                        "into the repository directly)."),
        id_offset: int = typer.Option(0, "--id-offset", help="Subtracted from owners (the source's id range)."),
        repo: str = _REPO, password_file: Path = _PWFILE, server: str = _SERVER, token: str = _TOKEN,
        wait: bool = _WAIT, timeout: float = _TIMEOUT, debug: bool = _DEBUG,
    ) -> None:
        """Back up an environment (its workspace, inner Docker volume and writable layer), or with --path
        directories; unchanged files since the last backup of ENV are not read again."""
        from flex.backup import backup, lock
        from flex.errors import UsageError

        if not path:
            from flex.cli import backup_env
            from flex.cli.target import connect

            client, _ = connect(server, token)
            with client:
                backup_env.create(client, env, wait=wait, timeout=timeout)
            return

        names = [p.name or "root" for p in path]
        if len(set(names)) != len(names):
            raise UsageError("two --path directories have the same name", hint="back them up separately")
        r = _open(repo, password_file, create=True)
        tag = f"env:{env}"
        parents = [s for s in r.snapshots() if tag in s.tags]
        with lock(r):
            snap, s = backup(r, dict(zip(names, path, strict=True)), id_offset=id_offset,
                             parent=parents[-1] if parents else None, tags=[tag])
        r.close()
        typer.echo(f"backup {snap.short_id} of {env}: {s.files_new} new, {s.files_changed} changed, "
                   f"{s.files_unmodified} unchanged files; {_size(s.bytes_total)} in, {_size(s.bytes_added)} added")
        for p in s.changed_during_read:
            typer.echo(f"warning: {p} changed while it was read; stored as read", err=True)

    @group.command("ls")
    def ls(
        env: str = typer.Argument(None, help="Only this environment's backups."),
        as_json: bool = typer.Option(False, "--json", help="One JSON array."),
        repo: str = _REPO, password_file: Path = _PWFILE, server: str = _SERVER, token: str = _TOKEN,
        debug: bool = _DEBUG,
    ) -> None:
        """List backups, oldest first: your environments' (through the control plane or the daemon), or with
        --repo (or when neither runs) a repository's."""
        from flex.cli import backup_env

        if repo is None and backup_env.reachable(server, token):
            from flex.cli.target import connect

            client, _ = connect(server, token)
            with client:
                backup_env.ls(client, env, as_json=as_json)
            return
        r = _open(repo, password_file)
        snaps = [s for s in r.snapshots() if env is None or f"env:{env}" in s.tags]
        if as_json:
            typer.echo(json.dumps([s.to_json() for s in snaps], indent=2))
            return
        typer.echo(f"{'ID':<8}  {'TIME':<19}  {'ENVIRONMENT':<20}  SIZE")
        for s in snaps:
            envs = ",".join(t.removeprefix("env:") for t in s.tags if t.startswith("env:")) or "-"
            typer.echo(f"{s.short_id:<8}  {s.time[:19].replace('T', ' '):<19}  {envs:<20}  "
                       f"{_size(s.summary.get('bytes_total', 0))}")

    @group.command("verify")
    def verify(
        read_data: bool = typer.Option(False, "--read-data", help="Read and authenticate every stored byte."),
        repo: str = _REPO, password_file: Path = _PWFILE, debug: bool = _DEBUG,
    ) -> None:
        """Check that every backup is whole; with --read-data, that no stored byte is damaged."""
        from flex.backup import check

        r = _open(repo, password_file)
        report = check(r, read_data=read_data)
        for e in report.errors:
            typer.echo(f"error: {e}", err=True)
        for d in report.damaged:
            typer.echo(f"damaged: backup {d.snapshot}: {d.path} (blob {d.blob})", err=True)
        if not report.ok:
            raise typer.Exit(1)
        typer.echo(f"ok: {report.snapshots} backups, {report.packs} packs"
                   + (f", {report.blobs} blobs read" if read_data else ""))

    @group.command("rm")
    def rm(
        backup_ids: list[str] = typer.Argument(..., metavar="BACKUP...", help="Backup ids (bk_... of an "
                                               "environment; or a repository's ids or unique prefixes)."),
        env: str = typer.Option(None, "--env", help="The environment the bk_... backups are of (default: search)."),
        prune_: bool = typer.Option(True, "--prune/--no-prune", help="Remove data no backup needs any more."),
        repo: str = _REPO, password_file: Path = _PWFILE, server: str = _SERVER, token: str = _TOKEN,
        debug: bool = _DEBUG,
    ) -> None:
        """Delete backups."""
        from flex.backup import lock, prune

        if repo is None and all(b.startswith("bk_") for b in backup_ids):
            from flex.cli import backup_env
            from flex.cli.target import connect

            client, _ = connect(server, token)
            with client:
                backup_env.rm(client, backup_ids, env)
            return

        r = _open(repo, password_file)
        with lock(r, exclusive=True):
            snaps = [r.find_snapshot(b) for b in backup_ids]
            for s in snaps:
                r.forget(s)
            freed = prune(r).bytes_freed if prune_ else 0
        r.close()
        typer.echo(f"removed {len(snaps)} backup(s)" + (f", {_size(freed)} freed" if prune_ else ""))

    @group.command("forget")
    def forget(
        keep_last: int = typer.Option(0, "--keep-last", help="Keep the last N backups."),
        keep_daily: int = typer.Option(0, "--keep-daily", help="Keep the newest backup of each of N days."),
        keep_weekly: int = typer.Option(0, "--keep-weekly", help="Keep the newest backup of each of N weeks."),
        prune_: bool = typer.Option(True, "--prune/--no-prune", help="Remove data no backup needs any more."),
        repo: str = _REPO, password_file: Path = _PWFILE, debug: bool = _DEBUG,
    ) -> None:
        """Apply a retention policy to each environment's backups."""
        from flex.backup import Policy, apply_policy, lock, prune
        from flex.errors import UsageError

        policy = Policy(keep_last, keep_daily, keep_weekly)
        if policy.empty:
            raise UsageError("no retention rule given", hint="pass --keep-last, --keep-daily or --keep-weekly")
        r = _open(repo, password_file)
        with lock(r, exclusive=True):
            keep, remove = apply_policy(r.snapshots(), policy)
            for s in remove:
                r.forget(s)
            freed = prune(r).bytes_freed if prune_ and remove else 0
        r.close()
        typer.echo(f"kept {len(keep)}, removed {len(remove)} backup(s)" + (f", {_size(freed)} freed" if freed else ""))
