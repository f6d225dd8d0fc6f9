"""`flex backup create|ls|rm ENV` and `flex restore BACKUP --as NAME` through the control plane or the daemon
(target.py's rule): the environment's runner makes and restores backups; these ask for them and follow them.

Used when no repository is named (`--path`, `--repo`/FLEX_BACKUP_REPO, `--target` pick backup.py's direct forms)
and a control plane is configured or the daemon runs.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from flex.api import Backup
    from flex.client import FlexClient

__all__ = ["create", "find", "ls", "reachable", "restore", "rm"]

_POLL = 0.5


def reachable(server: str | None, token: str | None) -> bool:
    """A control plane is configured, or the local daemon runs: the environment forms apply."""
    from flex.cli.target import resolve
    from flex.daemon import daemon_info
    from flex.home import flex_home

    return resolve(server, token).server is not None or daemon_info(flex_home()) is not None


def _size(n: float) -> str:
    from flex.cli.backup import _size as size

    return size(n)


def _line(b: Backup) -> str:
    when = (b.completed_at or b.created_at).strftime("%Y-%m-%d %H:%M:%S")
    gone = f"  deleted, kept until {b.expires_at:%Y-%m-%d %H:%M:%S}" if b.environment_deleted and b.expires_at else ""
    return f"{b.id:<23}  {when:<19}  {b.environment:<20}  {b.state:<9}  {b.files:>7}  {_size(b.size)}{gone}"


def create(client: FlexClient, env: str, *, wait: bool, timeout: float) -> None:
    from flex.errors import FlexError, Unavailable

    b = client.create_backup(env)
    typer.echo(f"backup {b.id} of {env} asked for", err=not wait)
    if not wait:
        typer.echo(b.id)
        return
    seen = b.state
    deadline = time.monotonic() + timeout
    while b.state not in ("completed", "failed"):
        if time.monotonic() > deadline:
            raise Unavailable(f"backup {b.id} of {env} is still {b.state} after {timeout:.0f} s",
                              hint=f"follow it with `flex backup ls {env}`")
        time.sleep(_POLL)
        b = client.get_backup(env, b.id)
        if b.state != seen:
            seen = b.state
            typer.echo(f"  {b.state}", err=True)
    if b.state == "failed":
        raise FlexError(f"backup {b.id} of {env} failed: {b.error or 'no reason given'}")
    typer.echo(f"backup {b.id} of {env}: {b.files} files, {_size(b.size)}")


def ls(client: FlexClient, env: str | None, *, as_json: bool) -> None:
    items = client.list_backups(env).items if env is not None else client.list_all_backups().items
    if as_json:
        typer.echo(json.dumps([b.model_dump(mode="json", by_alias=True) for b in items], indent=2))
        return
    typer.echo(f"{'ID':<23}  {'TIME':<19}  {'ENVIRONMENT':<20}  {'STATE':<9}  {'FILES':>7}  SIZE")
    for b in items:
        typer.echo(_line(b))


def find(client: FlexClient, backup_id: str, env: str | None) -> Backup:
    """The backup of that id, in ``env`` or in any of the caller's environments."""
    from flex.errors import NotFound

    if env is not None:
        return client.get_backup(env, backup_id)
    try:
        return client.get_any_backup(backup_id)  # deleted environments' too
    except NotFound:
        raise NotFound(f"backup {backup_id!r} not found in your backups",
                       hint="list them with `flex backup ls`") from None


def rm(client: FlexClient, backup_ids: list[str], env: str | None) -> None:
    for bid in backup_ids:
        b = find(client, bid, env)
        client.delete_backup(b.environment, b.id)
        typer.echo(f"removed backup {b.id} of {b.environment}")


def restore(client: FlexClient, backup_id: str, name: str | None, env: str | None, *, wait: bool,
            timeout: float, runner: str | None = None, selector: dict[str, str] | None = None) -> None:
    from flex.errors import FlexError, Unavailable

    b = find(client, backup_id, env)
    new = name or f"{b.environment}-{b.id[3:9]}"
    made = client.restore_backup(b.environment, b.id, new, runner=runner, selector=selector)
    where = f" on runner {made.status.runner_id}" if made.status.runner_id else ""
    typer.echo(f"restoring backup {b.id} of {b.environment} as {new}{where}", err=True)
    if not wait:
        typer.echo(new)
        return
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        e = client.get_environment(new)
        c = e.status.condition("Restored")
        note = f"{c.status} {c.reason}" if c else e.status.phase
        if note != said:
            typer.echo(f"  {note}", err=True)
        said = note
        if c is not None and c.status == "False":
            raise FlexError(f"restoring {new} failed: {c.message}")
        ready = e.status.condition("Ready")
        if ready is not None and ready.status == "True" and c is not None and c.status == "True":
            break
        if e.status.phase == "failed":
            raise FlexError(f"{new} failed after its restore: {e.status.message}", hint=f"see `flex logs {new}`")
        if time.monotonic() > deadline:
            raise Unavailable(f"{new} is not ready after {timeout:.0f} s", hint=f"follow it with `flex ls {new}`")
        time.sleep(_POLL)
    typer.echo(f"{new} is ready, restored from backup {b.id}")
