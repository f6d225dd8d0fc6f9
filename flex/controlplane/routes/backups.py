"""/api/v1/environments/{name}/backups: backups as resources of their environment (issue 17, docs/backup.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from flex.api import Backup, BackupList, BackupReport, BackupRestore, Environment
from flex.api.backup_spec import BACKUP_ID_PATTERN
from flex.controlplane.backups import Backups
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.routes.deps import Cp, RunnerCaller, User
from flex.controlplane.routes.environments import answer

__all__ = ["everywhere", "router"]

router = APIRouter(prefix="/api/v1/environments/{name}/backups", tags=["backups"], responses=PROBLEM_RESPONSES)
everywhere = APIRouter(prefix="/api/v1/backups", tags=["backups"], responses=PROBLEM_RESPONSES)

Id = Annotated[str, Path(pattern=BACKUP_ID_PATTERN, description="a backup's id, bk_...")]
OwnerQ = Annotated[str | None, Query(description="an admin may address another user's environment", max_length=63)]


def _json(b: Backup, status_code: int = 200) -> Response:
    return Response(b.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


@router.post("", status_code=202, response_model=Backup)
def create_backup(cp: Cp, who: User, name: str, owner: OwnerQ = None) -> Response:
    """Ask for a backup: recorded as pending in the environment's spec.backup.request; its runner makes it and
    reports in status.lastBackup and the BackedUp condition."""
    b = Backups(cp.store).request(who, name, owner=owner)
    return Response(b.model_dump_json(by_alias=True), status_code=202, media_type="application/json",
                    headers={"Location": f"/api/v1/environments/{name}/backups/{b.id}"})


@router.get("", response_model=BackupList)
def list_backups(cp: Cp, who: User, name: str, owner: OwnerQ = None) -> BackupList:
    """The environment's backups, oldest first (also those of a deleted environment of that name)."""
    return BackupList(items=Backups(cp.store).list(who, name, owner))


@router.get("/{backup_id}", response_model=Backup)
def get_backup(cp: Cp, who: User, name: str, backup_id: Id, owner: OwnerQ = None) -> Response:
    return _json(Backups(cp.store).get(who, name, backup_id, owner))


@router.delete("/{backup_id}", response_model=Backup)
def delete_backup(cp: Cp, who: User, name: str, backup_id: Id, owner: OwnerQ = None) -> Response:
    return _json(Backups(cp.store).delete(who, name, backup_id, owner))


@router.post("/{backup_id}/restore", status_code=201, response_model=Environment)
def restore_backup(cp: Cp, who: User, name: str, backup_id: Id, body: BackupRestore,
                   owner: OwnerQ = None) -> Response:
    """A new environment ``as`` from this backup (the same as POST /api/v1/environments with
    spec.restoreFrom.backup); its runner restores it and reports in the Restored condition."""
    wire = Backups(cp.store).restore(who, name, backup_id, body.as_, body.labels, owner, runner=body.runner,
                                     runner_selector=body.runner_selector)
    return answer(wire, 201, {"Location": f"/api/v1/environments/{body.as_}"})


@router.get("/{backup_id}/status", response_model=Backup)
def runner_get_backup(cp: Cp, who: RunnerCaller, name: str, backup_id: Id) -> Response:
    """Runner only: a backup of an environment bound to this runner (address it by id)."""
    return _json(Backups(cp.store).get(who, name, backup_id))


@router.put("/{backup_id}/status", response_model=Backup)
def report_backup(cp: Cp, who: RunnerCaller, name: str, backup_id: Id, body: BackupReport) -> Response:
    """Runner only: what became of a backup it was asked for."""
    return _json(Backups(cp.store).report(who, name, backup_id, body))


@everywhere.get("", response_model=BackupList)
def list_all_backups(cp: Cp, who: User, owner: OwnerQ = None) -> BackupList:
    """All your backups, oldest first, those of deleted environments too (``environmentDeleted``, kept until
    ``expiresAt``)."""
    return BackupList(items=Backups(cp.store).list_all(who, owner))


@everywhere.get("/{backup_id}", response_model=Backup)
def get_any_backup(cp: Cp, who: User, backup_id: Id, owner: OwnerQ = None) -> Response:
    return _json(Backups(cp.store).get_any(who, backup_id, owner))
