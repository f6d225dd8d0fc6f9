"""Backups as resources of their environment (issue 17): ask for one, list, read, remove, restore.

Declarative, like everything else here: asking for a backup records a row (state ``pending``) and writes its id
into the environment's ``spec.backup.request`` (a new generation, one watch event); the runner the environment
is bound to makes it, reports the row's outcome (``report``), then ``status.lastBackup`` and the ``BackedUp``
condition. A restore is an environment whose ``spec.restoreFrom.backup`` names a backup of the same owner; it is
bound to the runner that made the backup (whose repository holds it), or, for a backup in the server's shared
repository, to any runner on that one. Deleting an environment asks for a last backup, kept for the server's
``deleted_backup_retention`` after the environment goes (``expires_at``); once due, the runner holding its
repository forgets it and the row goes. Visibility follows the environment's: the owner (and admins) see a
backup, a runner the backups of environments bound to it; anything else is 404.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, or_
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import Backup, BackupReport, EnvironmentCreate
from flex.controlplane import audit, scheduler
from flex.controlplane.auth import Principal
from flex.controlplane.models import BackupRow, EnvironmentRow, RunnerRow
from flex.controlplane.store import Store, Wire, emit, lock, utc
from flex.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

__all__ = ["Backups", "ask_backup", "bind_restore", "check_spec_change", "new_backup", "on_delete", "on_deleted",
           "on_stop", "to_api"]

_HINT = "list them with `flex backup ls ENV`"


def to_api(row: BackupRow) -> Backup:
    return Backup(id=row.id, environment=row.environment, environment_id=row.env_id, owner=row.owner,
                  state=row.state, reason=row.reason, created_at=row.created_at, completed_at=row.completed_at,
                  size=row.size, files=row.files, error=row.error, runner_id=row.runner_id,
                  environment_deleted=row.expires_at is not None, expires_at=utc(row.expires_at),
                  repository=row.repository if row.repository in ("shared", "own") else None)


def _live(now: datetime) -> Any:
    """Not yet expired (a due backup is being forgotten by its runner: nobody sees or restores it any more)."""
    return col(BackupRow.expires_at).is_(None) | (col(BackupRow.expires_at) > now)


def _owned(s: Session, owner: str, backup_id: str) -> BackupRow:
    row = s.get(BackupRow, backup_id)
    expires = utc(row.expires_at) if row is not None else None
    if row is None or row.owner != owner or (expires is not None and expires <= datetime.now(UTC)):
        raise NotFound(f"backup {backup_id!r} not found", hint=_HINT)
    return row


def bind_restore(s: Session, row: EnvironmentRow, now: datetime, runner: str | None = None) -> bool:
    """Bind a new environment with ``spec.restoreFrom`` where its backup can be read: the runner that made it
    (its own repository), or, for a backup in the server's shared repository, any ready runner on that one
    (``runner``, a name or id; else as the spec's runnerSelector places it) — restore anywhere. Checks the
    backup is the owner's and complete. False (nothing done) without restoreFrom."""
    ref = (row.spec.get("restoreFrom") or {}).get("backup")
    if ref is None:
        if runner is not None:
            raise InvalidArgument("a runner is chosen this way only for a restore", hint="use spec.runnerSelector")
        return False
    b = _owned(s, row.owner, ref)
    if b.state != "completed" or b.runner_id is None:
        raise FailedPrecondition(f"backup {ref} is {b.state}, not completed: nothing to restore yet",
                                 hint=f"wait for it (`flex backup ls {b.environment}`)")
    maker = s.get(RunnerRow, b.runner_id)
    if b.repository != "shared":
        if maker is None:
            raise FailedPrecondition(f"backup {ref} is in the repository of runner {b.runner_id}, which is gone",
                                     hint="restore from a backup in a shared store (docs/backup.md)")
        if runner is not None and runner not in (maker.id, maker.name):
            raise FailedPrecondition(f"backup {ref} is in runner {maker.name}'s own repository: only it can "
                                     "restore it", hint="restore it there, or back up into the server's shared "
                                     "repository (`flex server --backup-repository`, docs/backup.md)")
        if not scheduler.bind_to(s, row, maker.id, now):
            raise FailedPrecondition(f"runner {maker.name}, whose repository holds backup {ref}, is not ready or "
                                     f"has no room for {row.name!r} now", hint="try again later, or free some room")
        return True
    shared = set(s.scalars(select(RunnerRow.id).where(RunnerRow.backup_repository == "shared",
                                                      RunnerRow.state == "ready")))
    loads = [r for r in scheduler.loads(s, ready_only=True) if r.id in shared]
    if runner is not None:
        loads = [r for r in loads if runner in (r.id, r.name)]
        if not loads:
            raise NotFound(f"runner {runner!r} is not a ready runner on the server's shared backup repository",
                           hint="list runners with `flex runner ls --json` (backupRepository)")
    selector = {} if runner is not None else dict(row.spec.get("runnerSelector") or {})  # a named runner wins
    placed = scheduler.pick(row.req_cpus, row.req_memory, row.req_disk, selector, loads,
                            scheduler.tenant_of(s, row, loads))
    if placed.runner is None:
        raise FailedPrecondition(f"no runner on the shared backup repository can restore {row.name!r}: "
                                 f"{placed.message}", hint="start a runner without FLEX_BACKUP_REPO, or choose "
                                 "another with --to / --selector")
    scheduler.bind(row, [placed.runner], now, scheduler.tenant_of(s, row, loads), selector)
    return True


def on_deleted(s: Session, env: EnvironmentRow, now: datetime, keep_for: float) -> None:
    """The environment is gone: its newest completed backup stays ``keep_for`` seconds (restorable with
    `flex restore`), the others are due at once; rows without a snapshot go now."""
    rows = list(s.scalars(select(BackupRow).where(BackupRow.env_id == env.id).order_by(col(BackupRow.created_at))))
    done = [r for r in rows if r.state == "completed"]
    for r in rows:
        if r.state != "completed":
            s.delete(r)
        elif r.expires_at is None:
            r.expires_at = now + timedelta(seconds=keep_for) if r is done[-1] and keep_for > 0 else now
            s.add(r)


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


def on_delete(s: Session, row: EnvironmentRow, now: datetime, keep_for: float) -> None:
    """Deleting an environment on a runner asks for a last backup in the same write (reason ``delete``); the
    runner makes it before its teardown unless nothing changed since the environment's last one (then it
    reports it removed). None when deleted backups are not kept (``keep_for`` 0) or a move's backup is due."""
    if keep_for <= 0 or row.runner_id is None or row.spec.get("move"):
        return
    b = new_backup(row, "delete", now)
    s.add(b)
    row.spec = ask_backup(row.spec, b.id)
    row.generation += 1


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
            q = select(BackupRow).where(BackupRow.owner == mine, _live(datetime.now(UTC)),
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

    def list_all(self, who: Principal, owner: str | None = None) -> builtins.list[Backup]:
        """Every backup of the caller (an admin: of ``owner``), deleted environments' included, oldest first."""
        mine = owner if (who.admin and owner) else who.name
        with self.store.db.read() as s:
            q = select(BackupRow).where(BackupRow.owner == mine, _live(datetime.now(UTC)))
            return [to_api(r) for r in s.scalars(q.order_by(col(BackupRow.created_at)))]

    def get_any(self, who: Principal, backup_id: str, owner: str | None = None) -> Backup:
        with self.store.db.read() as s:
            return to_api(_owned(s, owner if (who.admin and owner) else who.name, backup_id))

    # -- backups of deleted environments that are due (issue 17) ----------------------------------------

    @staticmethod
    def _due_for(s: Session, runner: RunnerRow, now: datetime) -> Any:
        """Due backups this runner forgets: those in its own repository, and those in the shared one (when it
        uses it) whose maker is gone."""
        mine = and_(col(BackupRow.runner_id) == runner.id,
                    or_(col(BackupRow.repository).is_(None),
                        col(BackupRow.repository) == (runner.backup_repository or "own")))
        cond = mine
        if runner.backup_repository == "shared":
            orphans = select(BackupRow.id).join(RunnerRow, col(RunnerRow.id) == col(BackupRow.runner_id),
                                                isouter=True).where(col(RunnerRow.id).is_(None))
            cond = or_(mine, and_(col(BackupRow.repository) == "shared", col(BackupRow.id).in_(orphans)))
        return select(BackupRow).where(col(BackupRow.expires_at).is_not(None), col(BackupRow.expires_at) <= now,
                                       cond).order_by(col(BackupRow.expires_at))

    def due(self, who: Principal, runner_id: str) -> builtins.list[Backup]:
        """Runner only: the due backups it is to forget from its repository (then ``forgotten``)."""
        with self.store.db.read() as s:
            runner = self._caller(s, who, runner_id)
            return [to_api(r) for r in s.scalars(self._due_for(s, runner, datetime.now(UTC)).limit(100))]

    def forgotten(self, who: Principal, runner_id: str, backup_id: str) -> None:
        """Runner only: a due backup's snapshot is out of the repository: its row goes."""

        def op(s: Session, now: datetime) -> None:
            runner = self._caller(s, who, runner_id)
            row = s.scalars(self._due_for(s, runner, now).where(BackupRow.id == backup_id)).first()
            if row is None:
                raise NotFound(f"backup {backup_id!r} is not due on runner {runner.name}",
                               hint="list them with GET .../expired-backups")
            s.delete(row)
            audit.record(s, who.actor, "backup.expired", f"environment:{row.owner}/{row.environment}", backup=row.id)

        self._write(op)

    @staticmethod
    def _caller(s: Session, who: Principal, runner_id: str) -> RunnerRow:
        runner = s.get(RunnerRow, runner_id)
        if who.kind != "runner" or who.id != runner_id or runner is None:
            raise NotFound(f"runner {runner_id!r} not found", hint="a runner asks with its own credential")
        return runner

    def drop_unreachable(self) -> int:
        """Due backups in the own repository of a runner that is gone: nobody can forget them; the rows go."""
        now = datetime.now(UTC)
        with self.store.db.read() as s:
            gone = list(s.scalars(select(BackupRow.id).join(
                RunnerRow, col(RunnerRow.id) == col(BackupRow.runner_id), isouter=True).where(
                col(BackupRow.expires_at).is_not(None), col(BackupRow.expires_at) <= now, col(RunnerRow.id).is_(None),
                col(BackupRow.repository).is_(None) | (BackupRow.repository != "shared"))))
        if gone:

            def op(s: Session, _now: datetime) -> None:
                for bid in gone:
                    row = s.get(BackupRow, bid)
                    if row is not None:
                        s.delete(row)

            self._write(op)
        return len(gone)

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
            if body.repository is not None or row.repository is None:
                runner = s.get(RunnerRow, who.id)
                row.repository = body.repository or (runner.backup_repository if runner is not None else None)
            if body.state in ("completed", "failed"):
                row.completed_at = row.completed_at or now
            s.add(row)
            return to_api(row)

        out: Backup = self._write(op)
        return out

    def restore(self, who: Principal, env: str, backup_id: str, name: str, labels: dict[str, str],
                owner: str | None = None, *, runner: str | None = None,
                runner_selector: dict[str, str] | None = None) -> Wire:
        """A new environment ``name`` of the backup's owner, from the backup (its spec as it was; a
        ``runner_selector`` replaces its runnerSelector), on ``runner`` if given (bind_restore)."""
        with self.store.db.read() as s:
            row = self._one(s, who, env, backup_id, owner)
            spec = {**row.spec, "restoreFrom": {"backup": row.id}}
        if row.owner != who.name:
            raise PermissionDenied("a backup is restored by its owner", hint=f"sign in as {row.owner}")
        if runner_selector is not None:
            spec["runnerSelector"] = runner_selector
        return self.store.create(who, EnvironmentCreate.model_validate({"name": name, "labels": labels,
                                                                        "spec": spec}), restore_on=runner)

