"""Backups as resources of their environment (issue 17): ``/api/v1/environments/{name}/backups``. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from flex.api.backup_spec import BackupState, ReportState
from flex.api.environments import NAME_PATTERN, Labels, check_labels
from flex.api.wire import WireModel

__all__ = ["Backup", "BackupList", "BackupReport", "BackupRestore"]


class Backup(WireModel):
    """One backup of an environment: asked for at ``created_at``, made by its runner, kept until removed."""

    id: str
    environment: str  # the environment's name
    environment_id: str
    owner: str
    state: BackupState
    reason: str = "manual"  # manual | stop | schedule | move
    created_at: datetime
    completed_at: datetime | None = None
    size: int = 0
    files: int = 0
    error: str | None = None
    runner_id: str | None = None
    # issue 17: the environment was deleted; this backup (its last) stays restorable until expires_at
    environment_deleted: bool = False
    expires_at: datetime | None = None
    repository: Literal["shared", "own"] | None = None  # where the runner put it: shared means any runner restores it


class BackupList(WireModel):
    items: list[Backup]


class BackupRestore(WireModel):
    """``POST .../backups/{id}/restore``: a new environment ``as`` from this backup."""

    model_config = {**WireModel.model_config, "extra": "forbid", "populate_by_name": True}
    as_: str = Field(alias="as", pattern=NAME_PATTERN, max_length=63)
    labels: Labels = Field(default_factory=dict)
    # issue 17 ("restore anywhere"): where the new environment goes, for a backup in the shared repository;
    # runnerSelector replaces the one in the backup's spec
    runner: str | None = Field(None, min_length=1, max_length=63)
    runner_selector: Labels | None = None

    @model_validator(mode="after")
    def _labels(self) -> BackupRestore:
        if self.runner_selector is not None:
            check_labels(self.runner_selector, "runnerSelector")
        return self


class BackupReport(WireModel):
    """Runner only: what became of a backup it was asked for (``removed``: retention forgot it)."""

    state: ReportState
    size: int = Field(0, ge=0)
    files: int = Field(0, ge=0)
    error: str | None = Field(None, max_length=4096)
    snapshot: str | None = Field(None, max_length=128)
    repository: Literal["shared", "own"] | None = None  # which repository the runner wrote it to
