"""What an environment's spec and status say about backups (issue 17): a requested backup, the backup an
environment is restored from, and the last backup its runner made. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from flex.api.wire import WireModel

__all__ = ["BACKUP_ID_PATTERN", "KEEP_LAST", "BackupSpec", "BackupState", "LastBackup", "MovePhase", "MoveSpec",
           "ReportState", "RestoreFrom"]

BACKUP_ID_PATTERN = r"^bk_[0-9a-f]{20}$"
BackupState = Literal["pending", "running", "completed", "failed"]
ReportState = Literal["running", "completed", "failed", "removed"]  # removed: retention forgot it


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KEEP_LAST = 3  # backups of an environment its runner keeps after each new one, unless spec.backup.keepLast says


def _duration(value: Any) -> Any:
    """``"6h"`` → 21600, ``"30m"``, ``"90s"``, ``"1d"``; numbers pass through; anything else is pydantic's."""
    if isinstance(value, str) and value[-1:] in _UNITS and value[:-1].strip().isdigit():
        return int(value[:-1]) * _UNITS[value[-1]]
    return value


class BackupSpec(WireModel):
    """``spec.backup``: ``request`` is the id of the newest backup asked for (written by the server when a user
    POSTs .../backups, or stops the environment); the bound runner makes it once, and says so in
    ``status.lastBackup``. ``onStop`` (default on, as Gitpod backs up every stopped workspace), ``keepLast``
    (default 3) and ``schedule`` (none by default) are the user's."""

    model_config = {**WireModel.model_config, "extra": "forbid"}
    request: str | None = Field(None, pattern=BACKUP_ID_PATTERN)
    on_stop: bool | None = None
    keep_last: int | None = Field(None, ge=1, le=1000)
    # while it runs, a backup every this long (seconds, or "6h", "1d"); absent: none on a schedule
    schedule: Annotated[Annotated[int, Field(ge=1, le=366 * 86400)] | None, BeforeValidator(_duration)] = None


class RestoreFrom(WireModel):
    """``spec.restoreFrom``: the environment starts from this backup of one of its owner's environments
    (workspace, inner Docker volume, writable layer) instead of a fresh clone."""

    model_config = {**WireModel.model_config, "extra": "forbid"}
    backup: str = Field(pattern=BACKUP_ID_PATTERN)


MovePhase = Literal["backup", "restore", "done"]


class MoveSpec(WireModel):
    """``spec.move`` (issue 17.5), written by the server only: the environment goes from runner ``from`` to
    runner ``to`` through backup ``backup``. ``phase``: ``backup`` (still bound to ``from``, which stops it
    and backs it up), ``restore`` (bound to ``to``, which restores and starts it; ``from`` keeps its copy),
    ``done`` (``to`` has it Ready; ``from`` removes its copy, then the server drops spec.move). A failure
    before ``done`` drops spec.move and binds the environment to ``from`` again."""

    model_config = {**WireModel.model_config, "extra": "forbid", "populate_by_name": True}
    from_: str = Field(alias="from", min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=64)
    backup: str = Field(pattern=BACKUP_ID_PATTERN)
    phase: MovePhase = "backup"


class LastBackup(WireModel):
    """``status.lastBackup``: the newest backup the runner made (or failed to make) of this environment."""

    id: str
    time: datetime | None = None
    size: int = 0  # bytes of files in the backup
    files: int = 0
    state: BackupState = "pending"
    error: str | None = Field(None, max_length=4096)
