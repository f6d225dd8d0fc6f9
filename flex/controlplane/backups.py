"""Backups as resources of their environment (issue 17): ask for one, list, read, remove, restore.

Declarative, like everything else here: asking for a backup records a row (state ``pending``) and writes its id
into the environment's ``spec.backup.request`` (a new generation, one watch event); the runner the environment
is bound to makes it, reports the row's outcome (``report``), then ``status.lastBackup`` and the ``BackedUp``
condition. A restore is an environment whose ``spec.restoreFrom.backup`` names a backup of the same owner; it is
bound to the runner that made the backup (whose repository holds it). Visibility follows the environment's: the
owner (and admins) see a backup, a runner the backups of environments bound to it; anything else is 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import Backup, BackupReport, EnvironmentCreate
from flex.controlplane import audit
from flex.controlplane.auth import Principal
from flex.controlplane.models import BackupRow, EnvironmentRow, RunnerRow
from flex.controlplane.store import Store, Wire, emit, lock, utc
from flex.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

__all__ = ["Backups", "ask_backup", "check_spec_change", "new_backup", "on_stop", "restore_runner",
           "to_api"]

_HINT = "list them with `flex backup ls ENV`"


def to_api(row: BackupRow) -> Backup:
    return Backup(id=row.id, environment=row.environment, environment_id=row.env_id, owner=row.owner,
                  state=row.state, reason=row.reason, created_at=row.created_at, completed_at=row.completed_at,
                  size=row.size, files=row.files, error=row.error, runner_id=row.runner_id)


def _owned(s: Session, owner: str, backup_id: str) -> BackupRow:
    row = s.get(BackupRow, backup_id)
    if row is None or row.owner != owner:
        raise NotFound(f"backup {backup_id!r} not found", hint=_HINT)
    return row


def restore_runner(s: Session, owner: str, spec: dict[str, Any]) -> str | None:
    """The runner a new environment with ``spec.restoreFrom`` must be bound to (the one whose repository
    holds the backup), after checking the backup is the owner's and complete; None without restoreFrom."""
    ref = (spec.get("restoreFrom") or {}).get("backup")
    if ref is None:
        return None
    row = _owned(s, owner, ref)
    if row.state != "completed" or row.runner_id is None:
        raise FailedPrecondition(f"backup {ref} is {row.state}, not completed: nothing to restore yet",
                                 hint=f"wait for it (`flex backup ls {row.environment}`)")
    runner = s.get(RunnerRow, row.runner_id)
    if runner is None:
        raise FailedPrecondition(f"backup {ref} is in the repository of runner {row.runner_id}, which is gone",
                                 hint="restore from a backup in a shared store (docs/backup.md)")
    return runner.id


def check_spec_change(old: dict[str, Any], new: dict[str, Any]) -> None:
    """spec.backup and spec.restoreFrom are written by the server only (a crafted one could name someone
    else's snapshot in a runner's shared repository)."""
    if (old.get("backup") or {}).get("request") != (new.get("backup") or {}).get("request"):
        raise InvalidArgument("spec.backup.request is set by the server, not by a patch",
                              hint="use POST /api/v1/environments/NAME/backups (`flex backup create NAME`)")
    if (old.get("move") or None) != (new.get("move") or None):
        raise InvalidArgument("spec.move is set by the server, not by a patch",
                              hint="use POST /api/v1/environments/NAME:move (`flex move NAME --to RUNNER`)")
    if (old.get("restoreFrom") or None) != (new.get("restoreFrom") or None):
        raise InvalidArgument("spec.restoreFrom is set by the server, not by a patch",
                              hint="use POST .../backups/ID/restore (`flex restore ID --as NAME`)")


def new_backup(row: EnvironmentRow, reason: str, now: datetime) -> BackupRow:
    spec = {k: v for k, v in row.spec.items() if k not in ("backup", "restoreFrom", "move")}
    return BackupRow(id="bk_" + uuid.uuid4().hex[:20], env_id=row.id, owner=row.owner, environment=row.name,
                     runner_id=row.runner_id, state="pending", reason=reason, spec=spec, created_at=now)


def ask_backup(spec: dict[str, Any], backup_id: str) -> dict[str, Any]:
    return {**spec, "backup": {**(spec.get("backup") or {}), "request": backup_id}}


def on_stop(s: Session, row: EnvironmentRow, old: dict[str, Any], new: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The spec to store for a patch from ``old`` to ``new``: stopping an environment on a runner asks for a
    backup too (reason ``stop``), unless ``spec.backup.onStop`` is false."""
    stopping = old.get("desiredPhase", "running") == "running" and new.get("desiredPhase") == "stopped"
    if not stopping or row.runner_id is None or (new.get("backup") or {}).get("onStop") is False:
        return new
    b = new_backup(row, "stop", now)
    s.add(b)
    return ask_backup(new, b.id)


class Backups:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _write(self, fn: Callable[[Session, datetime], Any]) -> Any:
        with self.store.writer, self.store.db.write() as s:
            lock(s)
            out = fn(s, datetime.now(UTC))
        self.store.on_commit()
        return out

    def _rows(self, s: Session, who: Principal, env: str, owner: str | None) -> list[BackupRow]:
        """The backups of ``env``: by its name for users (they outlive the environment), by id for runners."""
        if who.kind == "runner":
            row = Store.find(s, who, env)
            q = select(BackupRow).where(BackupRow.env_id == row.id)
        else:
            mine = owner if (who.admin and owner) else who.name
            q = select(BackupRow).where(BackupRow.owner == mine,
                                        (BackupRow.environment == env) | (BackupRow.env_id == env))
        return list(s.scalars(q.order_by(col(BackupRow.created_at))))

    def _one(self, s: Session, who: Principal, env: str, backup_id: str, owner: str | None) -> BackupRow:
        for row in self._rows(s, who, env, owner):
            if row.id == backup_id:
                return row
        raise NotFound(f"backup {backup_id!r} of environment {env!r} not found", hint=_HINT)

    def list(self, who: Principal, env: str, owner: str | None = None) -> list[Backup]:
        with self.store.db.read() as s:
            rows = self._rows(s, who, env, owner)
            if not rows and who.kind == "user":
                Store.find(s, who, env, owner)  # 404 for an environment that is not there (or not yours)
            return [to_api(r) for r in rows]

    def get(self, who: Principal, env: str, backup_id: str, owner: str | None = None) -> Backup:
        with self.store.db.read() as s:
            return to_api(self._one(s, who, env, backup_id, owner))

    def request(self, who: Principal, env: str, *, owner: str | None = None, reason: str = "manual") -> Backup:
        """Ask the environment's runner for a backup (owner or admin)."""

        def op(s: Session, now: datetime) -> Backup:
            row = Store.find(s, who, env, owner)
            if row.deletion_timestamp is not None:
                raise Conflict(f"environment {row.name!r} is being deleted", hint="its last backup is in "
                               f"`flex backup ls {row.name}`")
            if row.spec.get("move"):
                raise Conflict(f"environment {row.name!r} is moving to another runner (with a backup of its own)",
                               hint="ask for a backup once the move is done")
            if row.runner_id is None:
                raise FailedPrecondition(f"environment {row.name!r} is not on a runner yet: nothing to back up",
                                         hint="wait until it is scheduled (`flex ls`)")
            b = new_backup(row, reason, now)
            s.add(b)
            row.spec = ask_backup(row.spec, b.id)
            row.generation += 1
            emit(s, row, "MODIFIED", now)
            audit.record(s, who.actor, "backup.create", f"environment:{row.owner}/{row.name}", backup=b.id)
            return to_api(b)

        out: Backup = self._write(op)
        return out

    def schedule_due(self) -> int:
        """Ask for the backups a ``spec.backup.schedule`` makes due (the sweep calls this every round): an
        environment running on a runner, none of its backups pending or running, the newest older than its
        schedule. Returns how many were asked for."""
        with self.store.db.read() as s:
            cands = s.execute(select(EnvironmentRow.id, EnvironmentRow.spec, EnvironmentRow.status).where(
                col(EnvironmentRow.runner_id).is_not(None), col(EnvironmentRow.deletion_timestamp).is_(None),
                cast(col(EnvironmentRow.spec), String).like('%"schedule":%'))).all()
        due: list[str] = []
        now = datetime.now(UTC)
        with self.store.db.read() as s:
            for env_id, spec, status in cands:
                asked = (spec or {}).get("backup") or {}
                every = asked.get("schedule")
                if not isinstance(every, int) or (spec or {}).get("desiredPhase", "running") != "running":
                    continue
                seen = (status or {}).get("lastBackup") or {}
                if asked.get("request") and (seen.get("id") != asked["request"] or
                                             seen.get("state") not in ("completed", "failed")):
                    continue  # the runner has not said it is done with the last one: never ask over it
                rows = list(s.scalars(select(BackupRow).where(BackupRow.env_id == env_id)))
                if any(r.state in ("pending", "running") for r in rows):
                    continue
                last = max((utc(r.completed_at or r.created_at) or now for r in rows), default=None)
                if last is None or (now - last).total_seconds() >= every:
                    due.append(env_id)
        for env_id in due:

            def op(s: Session, now: datetime, env_id: str = env_id) -> None:
                row = s.get(EnvironmentRow, env_id)
                if row is None or row.runner_id is None or row.deletion_timestamp is not None:
                    return
                b = new_backup(row, "schedule", now)
                s.add(b)
                row.spec = ask_backup(row.spec, b.id)
                row.generation += 1
                emit(s, row, "MODIFIED", now)

            self._write(op)
        return len(due)

    def delete(self, who: Principal, env: str, backup_id: str, owner: str | None = None) -> Backup:
        """Forget a backup: its row goes now; the runner drops the snapshot at its next backup of the
        environment (retention), or at teardown."""

        def op(s: Session, now: datetime) -> Backup:
            row = self._one(s, who, env, backup_id, owner)
            if row.state in ("pending", "running"):
                raise Conflict(f"backup {backup_id} is {row.state}", hint="remove it once it has completed")
            out = to_api(row)
            s.delete(row)
            audit.record(s, who.actor, "backup.delete", f"environment:{row.owner}/{row.environment}",
                         backup=row.id)
            return out

        out: Backup = self._write(op)
        return out

    def report(self, who: Principal, env: str, backup_id: str, body: BackupReport) -> Backup:
        """The bound runner says what became of a backup it was asked for."""
        if who.kind != "runner":
            raise PermissionDenied("only the runner an environment is bound to reports its backups",
                                   hint="ask for a backup with POST .../backups")

        def op(s: Session, now: datetime) -> Backup:
            row = self._one(s, who, env, backup_id, None)
            if body.state == "removed":  # the runner's retention forgot it
                out = to_api(row)
                s.delete(row)
                return out
            row.state, row.size, row.files, row.error = body.state, body.size, body.files, body.error
            row.snapshot = body.snapshot or row.snapshot
            row.runner_id = who.id
            if body.state in ("completed", "failed"):
                row.completed_at = row.completed_at or now
            s.add(row)
            return to_api(row)

        out: Backup = self._write(op)
        return out

    def restore(self, who: Principal, env: str, backup_id: str, name: str, labels: dict[str, str],
                owner: str | None = None) -> Wire:
        """A new environment ``name`` of the backup's owner, from the backup (its spec as it was)."""
        with self.store.db.read() as s:
            row = self._one(s, who, env, backup_id, owner)
            spec = {**row.spec, "restoreFrom": {"backup": row.id}}
        if row.owner != who.name:
            raise PermissionDenied("a backup is restored by its owner", hint=f"sign in as {row.owner}")
        return self.store.create(who, EnvironmentCreate.model_validate({"name": name, "labels": labels,
                                                                        "spec": spec}))

