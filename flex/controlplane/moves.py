"""Moving an environment to another runner (issue 17.5): stop, a last backup on the old runner, bind to the new
one, restore there, start; the old runner removes its copy only once the new one has it Ready.

The move's phase lives in the environment (``spec.move``, written by the server only; ``Moving`` is a server
condition in its status), and every step is taken by whoever sees the state that calls for it, so a kill -9 of
the server or of either runner at any point only delays the next step:

    backup    bound to ``from``: it stops the container and makes backup ``spec.move.backup`` (reason move)
    restore   the backup completed: bound to ``to``, which restores it and starts; ``from`` keeps its copy
              (environments.move_from lets it see the environment without writing its status)
    done      ``to`` reported Ready (or, stopped, its restore): ``from`` removes its copy and says so
              (DELETE /runners/{id}/environments/{env}); then spec.move goes

A failed backup, a failed restore or start on ``to`` (``status.phase`` failed), or ``to`` going offline, before
``done``, rolls back: spec.move goes and the environment is bound to ``from`` again, which starts it as it was.
``advance`` is called in the transaction of each status write (the old runner's saying its backup is made,
the new one's saying Ready or failed) and by the server's sweep (a runner going offline writes nothing), so
nothing depends on a single event arriving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import EnvironmentMove, EnvironmentStatus, set_condition
from flex.controlplane import audit, scheduler
from flex.controlplane.auth import Principal
from flex.controlplane.models import BackupRow, EnvironmentRow, RunnerRow
from flex.controlplane.store import Store, Wire, emit, lock
from flex.errors import Conflict, FailedPrecondition, NotFound

__all__ = ["Moves", "Step", "advance", "old_copy_removed"]

_SHARED_HINT = ("give the server a shared repository (`flex server --backup-repository DIR|s3:...`, docs/backup.md) "
                "and start both runners without FLEX_BACKUP_REPO")


@dataclass(frozen=True)
class Step:
    """advance() changed the row; ``also``: a runner that must see this write though it no longer sees the
    environment (the new runner of a rolled-back move: it removes what it restored)."""

    also: str | None = None


def _status(row: EnvironmentRow) -> EnvironmentStatus:
    return EnvironmentStatus.model_validate(row.status)


def _moving(status: EnvironmentStatus, value: bool | None, reason: str, message: str, now: datetime) -> None:
    set_condition(status, "Moving", value, reason=reason, message=message[:4096], now=now)


def _spec_without_move(row: EnvironmentRow) -> dict[str, Any]:
    return {k: v for k, v in row.spec.items() if k != "move"}


def _name(s: Session, runner_id: str) -> str:
    runner = s.get(RunnerRow, runner_id)
    return runner.name if runner is not None else runner_id


def _rollback(s: Session, row: EnvironmentRow, move: dict[str, Any], why: str, now: datetime) -> Step:
    """Back to ``from`` as it was: it never removed its copy, and starts it again."""
    status = _status(row)
    status.conditions = [c for c in status.conditions if c.type != "Restored"]
    _moving(status, False, "MoveFailed", f"the move to runner {_name(s, move['to'])} failed: {why}; the "
            f"environment stays on runner {_name(s, move['from'])}", now)
    status.runner_id = move["from"]
    set_condition(status, "Scheduled", True, reason="Scheduled", message=f"bound to runner {_name(s, move['from'])}",
                  now=now)
    also = row.runner_id if row.runner_id != move["from"] else None
    if also is not None:
        status.phase = "pending"
    row.status = status.to_wire()
    row.spec = _spec_without_move(row)
    row.generation += 1
    row.runner_id, row.move_from = move["from"], None
    audit.record(s, "system", "environment.move-failed", f"environment:{row.owner}/{row.name}", to=move["to"],
                 reason=why[:200])
    return Step(also)


def advance(s: Session, row: EnvironmentRow, now: datetime) -> Step | None:
    """Take the next step of ``row``'s move, if its state calls for one (under the write lock; the caller
    emits). None if nothing changed."""
    move = row.spec.get("move")
    if not move or row.deletion_timestamp is not None:
        return None
    phase = move.get("phase", "backup")
    if phase == "backup":
        b = s.get(BackupRow, move["backup"])
        seen = _status(row).last_backup  # the old runner is done with it (retention too) once its status says so
        if b is not None and (b.state not in ("completed", "failed") or seen is None or seen.id != b.id
                              or seen.state != b.state):
            return None
        if b is None or b.state == "failed":
            return _rollback(s, row, move, f"its backup failed: {b.error if b is not None else 'it is gone'}", now)
        target = s.get(RunnerRow, move["to"])
        if target is None or target.state != "ready":
            return _rollback(s, row, move, f"runner {target.name if target else move['to']} is not ready", now)
        load = scheduler.load_of(s, target)  # cordoned or filled up since the move was asked for?
        placed = scheduler.pick(row.req_cpus, row.req_memory, row.req_disk, {}, [load],
                                scheduler.tenant_of(s, row, [load]))
        if placed.runner is None:
            return _rollback(s, row, move, placed.message, now)
        status = _status(row)  # the new runner starts from a clean slate; the server's conditions stay
        fresh = EnvironmentStatus(runner_id=target.id, last_backup=status.last_backup,
                                  conditions=[c for c in status.conditions if c.type in ("Scheduled", "Moving")])
        set_condition(fresh, "Scheduled", True, reason="Scheduled", message=f"bound to runner {target.name} (moved)",
                      now=now)
        set_condition(fresh, "RunnerReady", True, reason="RunnerOnline", message=f"runner {target.name} is ready",
                      now=now)
        _moving(fresh, True, "Restoring", f"runner {target.name} is restoring backup {move['backup']}", now)
        row.status = fresh.to_wire()
        row.spec = {**row.spec, "move": {**move, "phase": "restore"}}
        row.generation += 1
        row.runner_id, row.move_from = target.id, move["from"]
        return Step()
    if phase == "restore":
        target = s.get(RunnerRow, move["to"])
        status = _status(row)
        current = status.observed_generation == row.generation
        restored = status.condition("Restored")
        ready = status.condition("Ready")
        if target is None or target.state != "ready":
            return _rollback(s, row, move, f"runner {target.name if target else move['to']} went offline", now)
        if current and status.phase == "failed":
            why = (restored.message if restored is not None and restored.status == "False" else status.message) or \
                "the new runner could not start it"
            return _rollback(s, row, move, why, now)
        up = ready is not None and ready.status == "True" and status.phase == "running"
        stopped = row.spec.get("desiredPhase") == "stopped" and status.phase == "stopped"
        if current and restored is not None and restored.status == "True" and (up or stopped):
            _moving(status, True, "RemovingOldCopy", f"Ready on runner {target.name}; runner "
                    f"{_name(s, move['from'])} removes its copy", now)
            row.status = status.to_wire()
            row.spec = {**row.spec, "move": {**move, "phase": "done"}}
            row.generation += 1
            audit.record(s, "system", "environment.moved", f"environment:{row.owner}/{row.name}", to=target.id)
            return Step()
    if phase == "done" and s.get(RunnerRow, move["from"]) is None:  # the old runner was deleted: nobody to wait for
        _finish(s, row, move, now)
        return Step()
    return None


def old_copy_removed(s: Session, row: EnvironmentRow, now: datetime) -> Wire:
    """The old runner has removed its copy of a moved environment: the move is over."""
    move = row.spec.get("move") or {}
    if move.get("phase") != "done":
        raise FailedPrecondition(f"environment {row.name!r} has not finished moving",
                                 hint="keep its copy until spec.move.phase is done")
    _finish(s, row, move, now)
    return emit(s, row, "MODIFIED", now)


def _finish(s: Session, row: EnvironmentRow, move: dict[str, Any], now: datetime) -> None:
    row.move_from = None
    row.spec = _spec_without_move(row)
    row.generation += 1
    status = _status(row)
    _moving(status, False, "Moved", f"moved from runner {_name(s, str(move.get('from')))}; its copy is removed", now)
    row.status = status.to_wire()


class Moves:
    def __init__(self, store: Store, *, shared: bool) -> None:
        self.store, self.shared = store, shared

    def request(self, who: Principal, ref: str, body: EnvironmentMove, *, owner: str | None = None) -> Wire:
        """Start a move (owner or admin): checks the target as placement would, then asks for the backup."""

        def op(s: Session, now: datetime) -> Wire:
            row = Store.find(s, who, ref, owner)
            if row.deletion_timestamp is not None:
                raise Conflict(f"environment {row.name!r} is being deleted", hint="create a new one once it is gone")
            if row.spec.get("move"):
                raise Conflict(f"environment {row.name!r} is already moving to runner {row.spec['move']['to']}",
                               hint="wait for it (`flex ls`), then move it again")
            if row.runner_id is None:
                raise FailedPrecondition(f"environment {row.name!r} is not on a runner yet: nothing to move",
                                         hint="wait until it is scheduled (`flex ls`)")
            source = s.get(RunnerRow, row.runner_id)
            if source is None or source.state != "ready":
                raise FailedPrecondition(f"environment {row.name!r} is on runner "
                                         f"{source.name if source else row.runner_id}, which is offline: it cannot "
                                         "make the backup a move starts from", hint="start that runner again")
            runners = [r for r in scheduler.loads(s, ready_only=True) if r.id != row.runner_id]
            selector = dict(body.runner_selector or {})
            if body.runner is not None:
                runners = [r for r in runners if body.runner in (r.name, r.id)]
                if not runners:
                    raise NotFound(f"runner {body.runner!r} is not another ready runner" +
                                   (" (the environment is on it already)" if body.runner in (source.name, source.id)
                                    else ""), hint="list runners with `flex runner ls`")
            tenant = scheduler.tenant_of(s, row, runners)
            placed = scheduler.pick(row.req_cpus, row.req_memory, row.req_disk, selector, runners, tenant)
            if placed.runner is None:
                raise FailedPrecondition(f"cannot move {row.name!r}: {placed.message}",
                                         hint="choose another runner (`flex move ENV --to RUNNER`)")
            target = s.get(RunnerRow, placed.runner.id)
            assert target is not None
            if not self.shared:
                raise FailedPrecondition("this server has no shared backup repository, and a move restores the "
                                         "old runner's backup on the new one", hint=_SHARED_HINT)
            own = [r.name for r in (source, target) if r.backup_repository != "shared"]
            if own:
                raise FailedPrecondition(f"runner {' and '.join(own)} backs up into its own repository, not the "
                                         "server's shared one: the new runner could not read the backup",
                                         hint=_SHARED_HINT)
            from flex.controlplane.backups import ask_backup, new_backup

            b = new_backup(row, "move", now)
            s.add(b)
            row.spec = {**ask_backup(row.spec, b.id), "move": {"from": source.id, "to": target.id, "backup": b.id,
                                                          "phase": "backup"}}
            row.generation += 1
            status = _status(row)
            _moving(status, True, "BackingUp", f"to runner {target.name}: runner {source.name} stops the "
                    f"environment and makes backup {b.id}", now)
            row.status = status.to_wire()
            audit.record(s, who.actor, "environment.move", f"environment:{row.owner}/{row.name}",
                         to=target.id, backup=b.id)
            return emit(s, row, "MODIFIED", now)

        out = self._write(op)
        assert out is not None
        return out

    def _write(self, fn: Callable[[Session, datetime], Wire | None]) -> Wire | None:
        with self.store.writer, self.store.db.write() as s:
            lock(s)
            out = fn(s, datetime.now(UTC))
        if out is not None:
            self.store.on_commit()
        return out

    def sweep(self) -> int:
        """advance() every moving environment (a runner going offline changes nothing else)."""
        with self.store.db.read() as s:
            ids = list(s.scalars(select(EnvironmentRow.id).where(
                cast(col(EnvironmentRow.spec), String).like('%"move":%'))))
        moved = 0
        for env_id in ids:

            def op(s: Session, now: datetime, env_id: str = env_id) -> Wire | None:
                row = s.get(EnvironmentRow, env_id)
                step = advance(s, row, now) if row is not None else None
                return emit(s, row, "MODIFIED", now, also=step.also) if row is not None and step else None

            if self._write(op) is not None:
                moved += 1
        return moved
