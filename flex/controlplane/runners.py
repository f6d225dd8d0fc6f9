"""Runners joining, heartbeating and going offline, and retrying placement of unbound environments; the
operations an admin (or a personal runner's owner) has on them: cordon, drain, delete, rotate, revoke.

A runner silent for ``heartbeat_timeout`` seconds is marked offline and each environment bound to it gets
``RunnerReady=False`` (reason ``RunnerOffline``); its next heartbeat makes it ready again. Environments stay
bound meanwhile: their files live on that runner's disk. A runner credential expires ``credential_ttl``
seconds after the last heartbeat; each heartbeat renews it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import (
    EnvironmentMove,
    EnvironmentStatus,
    JoinRequest,
    JoinResponse,
    Runner,
    RunnerCapacity,
    RunnerGrant,
    RunnerHeartbeat,
    set_condition,
)
from flex.controlplane import audit, scheduler
from flex.controlplane.auth import RUNNER_PREFIX, Principal, hash_secret, new_secret
from flex.controlplane.db import Database
from flex.controlplane.grants import check_declared
from flex.controlplane.models import EnvironmentRow, JoinTokenRow, RunnerRow
from flex.controlplane.store import emit, lock, utc
from flex.errors import (
    AlreadyExists,
    FailedPrecondition,
    FlexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

if TYPE_CHECKING:
    from flex.controlplane.moves import Moves

__all__ = ["Runners", "find_runner"]


def _wire(row: RunnerRow, load: scheduler.RunnerLoad | None) -> Runner:
    return Runner(
        id=row.id, name=row.name, kind=row.kind, labels=row.labels, state=row.state,
        capacity=RunnerCapacity(cpus=row.cpus, memory=row.memory, disk=row.disk),
        allocated=RunnerCapacity(cpus=load.used_cpus if load else 0, memory=load.used_memory if load else 0,
                                 disk=load.used_disk if load else 0),
        environments=load.count if load else 0, last_heartbeat=utc(row.last_heartbeat),
        created_at=utc(row.created_at), cordoned=row.cordoned, owner=row.owner,
        grant=RunnerGrant.model_validate(row.allowance), rootless=row.rootless, id_ranges=row.id_ranges,
        credential_expires_at=utc(row.credential_expires_at), disk_pressure=row.disk_pressure,
        idle_timeout=row.idle_timeout, backup_repository=row.backup_repository,
    )


def find_runner(s: Session, who: Principal, ref: str) -> RunnerRow:
    """A runner by id or name, if ``who`` may manage it (an admin, or a personal runner's owner); else NotFound."""
    row = s.get(RunnerRow, ref) if ref.startswith("run_") else s.scalars(
        select(RunnerRow).where(RunnerRow.name == ref)).first()
    if row is None or not (who.admin or (who.kind == "user" and row.owner == who.name)
                           or (who.kind == "runner" and who.id == row.id)):
        raise NotFound(f"runner {ref!r} not found", hint="list runners with `flex runner ls`")
    return row


class Runners:
    def __init__(self, db: Database, heartbeat_timeout: float, on_commit: Callable[[], None],
                 on_runners_changed: Callable[[], None] = lambda: None,
                 writer: threading.Lock | None = None, credential_ttl: float = 7 * 86400.0) -> None:
        self.db = db
        self.heartbeat_timeout = heartbeat_timeout
        self.credential_ttl = credential_ttl
        self.on_commit = on_commit
        self.on_runners_changed = on_runners_changed
        self.writer = writer or threading.Lock()  # the store's: one environment writer per process

    def join(self, body: JoinRequest) -> JoinResponse:
        now = datetime.now(UTC)
        credential = new_secret(RUNNER_PREFIX)
        try:
            with self.db.write() as s:
                # A conditional UPDATE makes the token single-use even when two joins race on it.
                used = s.execute(update(JoinTokenRow).where(col(JoinTokenRow.hash) == hash_secret(body.token),
                                                            col(JoinTokenRow.used_at).is_(None),
                                                            col(JoinTokenRow.expires_at) > now)
                                 .values(used_at=now))
                if used.rowcount != 1:  # type: ignore[attr-defined]
                    raise Unauthenticated("this join token is invalid, used or expired",
                                          hint="ask an admin for a new one (`flex runner join-token`)")
                if s.scalars(select(RunnerRow).where(RunnerRow.name == body.name)).first() is not None:
                    raise AlreadyExists(f"a runner named {body.name!r} already exists")
                token = s.get(JoinTokenRow, hash_secret(body.token))
                grant = RunnerGrant.model_validate(token.allowance if token is not None else {})
                if body.kind == "desktop" and grant.owner is None:
                    raise InvalidArgument(f"runner {body.name!r}: a desktop runner belongs to a person, and this "
                                          "join token names no owner",
                                          hint="join it with a token its owner made, or one made with an owner")
                check_declared(grant, body.name, body.labels, body.capacity)
                row = RunnerRow(id="run_" + uuid.uuid4().hex[:20], name=body.name, kind=body.kind,
                                cpus=body.capacity.cpus, memory=body.capacity.memory, disk=body.capacity.disk,
                                labels=body.labels, state="ready", credential_hash=hash_secret(credential),
                                last_heartbeat=now, created_at=now, owner=grant.owner,
                                allowance=grant.to_wire(), rootless=body.rootless, id_ranges=body.id_ranges,
                                credential_expires_at=now + timedelta(seconds=self.credential_ttl))
                s.add(row)
                s.execute(update(JoinTokenRow).where(col(JoinTokenRow.hash) == hash_secret(body.token))
                          .values(runner_id=row.id))
                audit.record(s, f"runner:{body.name}", "runner.join", f"runner:{row.id}", kind=body.kind,
                             labels=body.labels, owner=grant.owner)
        except IntegrityError as err:
            raise AlreadyExists(f"a runner named {body.name!r} already exists") from err
        self.on_runners_changed()
        self.schedule_pending()
        return JoinResponse(id=row.id, credential=credential, expires_at=row.credential_expires_at)

    def _check(self, who: Principal, runner_id: str) -> None:
        if who.kind != "runner" or who.id != runner_id:
            raise PermissionDenied("a runner may act only as itself")

    def heartbeat(self, who: Principal, runner_id: str, body: RunnerHeartbeat) -> Runner:
        self._check(who, runner_id)
        now = datetime.now(UTC)
        with self.db.write() as s:
            row = s.get(RunnerRow, runner_id)
            if row is None:
                raise NotFound(f"runner {runner_id!r} not found")
            check_declared(RunnerGrant.model_validate(row.allowance), row.name, body.labels, body.capacity)
            row.last_heartbeat = now
            row.credential_expires_at = now + timedelta(seconds=self.credential_ttl)
            if body.capacity is not None:
                row.cpus, row.memory, row.disk = body.capacity.cpus, body.capacity.memory, body.capacity.disk
            if body.labels is not None:
                row.labels = body.labels
            if body.rootless is not None:
                row.rootless = body.rootless
            if body.id_ranges is not None:
                row.id_ranges = body.id_ranges
            if body.disk_pressure is not None:
                row.disk_pressure = body.disk_pressure
            if body.backup_repository is not None:
                row.backup_repository = body.backup_repository
            if "idle_timeout" in body.model_fields_set:  # null: the runner has no default (any more)
                row.idle_timeout = body.idle_timeout
            came_back = row.state != "ready"
            s.flush()
            answer = _wire(row, scheduler.load_of(s, row))  # the common case: one transaction, no rescan
        news = (body.capacity, body.labels, body.rootless, body.id_ranges, body.disk_pressure)
        if came_back or any(v is not None for v in news):
            self.on_runners_changed()
            self._set_state(runner_id, "ready")
            self.schedule_pending()
            return self.get(runner_id)
        return answer

    def get(self, runner_id: str) -> Runner:
        with self.db.read() as s:
            row = s.get(RunnerRow, runner_id)
            if row is None:
                raise NotFound(f"runner {runner_id!r} not found")
            return _wire(row, scheduler.load_of(s, row))

    def list_runners(self, who: Principal) -> list[Runner]:
        """An admin sees every runner; a user their personal ones."""
        with self.db.read() as s:
            by_id = {r.id: r for r in scheduler.loads(s)}
            q = select(RunnerRow).order_by(RunnerRow.name)
            if not who.admin:
                q = q.where(RunnerRow.owner == who.name)
            return [_wire(r, by_id.get(r.id)) for r in s.scalars(q)]

    def _set_state(self, runner_id: str, state: str) -> None:
        """Flip a runner's state and record it on each environment bound to it (one event each)."""
        with self.writer, self.db.write() as s:
            lock(s)
            now = datetime.now(UTC)
            row = s.get(RunnerRow, runner_id)
            if row is None:
                return
            row.state = state
            ready = state == "ready"
            for env in s.scalars(select(EnvironmentRow).where(EnvironmentRow.runner_id == runner_id)):
                status = EnvironmentStatus.model_validate(env.status)
                since = utc(row.last_heartbeat)
                message = (f"runner {row.name} is ready" if ready else
                           f"runner {row.name} has sent no heartbeat since {since.isoformat() if since else 'joining'}")
                if set_condition(status, "RunnerReady", ready, reason="RunnerOnline" if ready else "RunnerOffline",
                                 message=message, now=now):
                    env.status = status.to_wire()
                    emit(s, env, "MODIFIED", now)
            if not ready:
                audit.record(s, "system", "runner.offline", f"runner:{runner_id}")
        self.on_commit()

    def sweep(self) -> None:
        """Mark silent runners offline, then retry placement. Safe on every replica at once."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.heartbeat_timeout)
        with self.db.write() as s:
            stale = list(s.scalars(select(RunnerRow.id).where(RunnerRow.state == "ready",
                                                              RunnerRow.last_heartbeat < cutoff)))  # type: ignore[operator]
            for rid in stale:  # conditional, so two replicas sweeping together flip each runner once
                s.execute(update(RunnerRow).where(col(RunnerRow.id) == rid, col(RunnerRow.state) == "ready")
                          .values(state="offline"))
        for rid in stale:
            self._set_state(rid, "offline")
        if stale:
            self.on_runners_changed()
        self.schedule_pending()

    def schedule_pending(self) -> int:
        """Bind every unbound environment that now fits somewhere; returns how many were bound."""
        with self.db.read() as s:
            waiting = s.scalars(select(EnvironmentRow.id).where(
                EnvironmentRow.runner_id.is_(None), EnvironmentRow.deletion_timestamp.is_(None)).limit(1)).first()  # type: ignore[union-attr]
        if waiting is None:
            return 0
        bound = 0
        with self.writer, self.db.write() as s:
            lock(s)
            now = datetime.now(UTC)
            loads = scheduler.loads(s, ready_only=True)
            rows = s.scalars(select(EnvironmentRow).where(
                EnvironmentRow.runner_id.is_(None), EnvironmentRow.deletion_timestamp.is_(None))  # type: ignore[union-attr]
                .order_by(col(EnvironmentRow.created_at)))
            groups: dict[str, frozenset[str]] = {}
            for row in rows:
                if row.owner not in groups:
                    groups[row.owner] = scheduler.tenant_of(s, row, loads).groups
                tenant = scheduler.Tenant(row.owner, groups[row.owner], scheduler.local_source(row.spec))
                if scheduler.bind(row, loads, now, tenant):
                    bound += row.runner_id is not None
                    emit(s, row, "MODIFIED", now)
        if bound:
            self.on_commit()
        return bound

    # -- what an admin (or a personal runner's owner) does to a runner ---------------------------------

    def set_cordoned(self, who: Principal, ref: str, cordoned: bool) -> Runner:
        """Cordoned: no new environments are bound to it; those bound stay. Uncordoning retries placement."""
        with self.db.write() as s:
            row = find_runner(s, who, ref)
            if row.cordoned != cordoned:
                row.cordoned = cordoned
                audit.record(s, who.actor, "runner.cordon" if cordoned else "runner.uncordon", f"runner:{row.id}")
            rid = row.id
        self.on_runners_changed()
        if not cordoned:
            self.schedule_pending()
        return self.get(rid)

    def drain(self, who: Principal, ref: str, moves: Moves) -> Runner:
        """Cordon, then move each environment off to another runner, as `flex move` does (the move's backup
        goes through the server's shared repository). Without one, a runner with environments is refused and
        nothing changes. Environments that cannot move (no other runner fits) are named in a 412; the others
        move, and the runner stays cordoned."""
        with self.db.read() as s:
            row = find_runner(s, who, ref)
            bound = list(s.execute(select(EnvironmentRow.name, EnvironmentRow.owner, EnvironmentRow.spec)
                                   .where(col(EnvironmentRow.runner_id) == row.id,
                                          col(EnvironmentRow.deletion_timestamp).is_(None))).all())
        if bound and not moves.shared:
            raise FailedPrecondition(f"runner {row.name!r} has {len(bound)} environment(s), and moving them to "
                                     "other runners restores their backups there: this server has no shared "
                                     "backup repository", hint="start the server with `--backup-repository "
                                     "DIR|s3:...` (docs/backup.md), or cordon it and stop and delete its "
                                     "environments")
        drained = self.set_cordoned(who, ref, True)
        stuck = []
        for name, owner, spec in bound:
            if (spec or {}).get("move"):
                continue  # moving already (off this runner, or onto it: that one rolls back if it fails)
            try:
                moves.request(who, name, EnvironmentMove.model_construct(runner=None, runner_selector={}),
                              owner=owner)
            except FlexError as err:
                stuck.append(f"{owner}/{name}: {err.message}")
        if stuck:
            raise FailedPrecondition(f"runner {row.name!r} is cordoned, but {len(stuck)} of its {len(bound)} "
                                     f"environment(s) cannot move: {'; '.join(stuck)}",
                                     hint="add or uncordon a runner they fit on, then drain again; or move each "
                                          "with `flex move ENV --to RUNNER`")
        return drained

    def delete(self, who: Principal, ref: str) -> None:
        """Remove a runner and its credential; refused while environments are bound to it."""
        with self.writer, self.db.write() as s:
            lock(s)  # no environment is bound to it between the count and the delete
            row = find_runner(s, who, ref)
            count = _bound(s, row.id)
            if count:
                raise FailedPrecondition(f"runner {row.name!r} still has {count} environment(s)",
                                         hint="delete them first; if the runner is gone for good, an admin can "
                                              "force-delete them (`flex rm --force NAME`)")
            s.delete(row)
            audit.record(s, who.actor, "runner.delete", f"runner:{row.id}", name=row.name)
        self.on_runners_changed()

    def rotate(self, who: Principal, ref: str) -> JoinResponse:
        """A new credential, shown once; the old one stops working (at once here, within the cache TTL elsewhere)."""
        credential = new_secret(RUNNER_PREFIX)
        now = datetime.now(UTC)
        with self.db.write() as s:
            row = find_runner(s, who, ref)
            row.credential_hash = hash_secret(credential)
            row.credential_expires_at = now + timedelta(seconds=self.credential_ttl)
            audit.record(s, who.actor, "runner.rotate", f"runner:{row.id}")
            return JoinResponse(id=row.id, credential=credential, expires_at=row.credential_expires_at)

    def revoke(self, who: Principal, ref: str) -> Runner:
        """The credential stops working; the runner and its environments stay (rotate issues a new one)."""
        with self.db.write() as s:
            row = find_runner(s, who, ref)
            row.credential_hash = "revoked:" + uuid.uuid4().hex  # unique, and no secret hashes to it
            row.credential_expires_at = None
            audit.record(s, who.actor, "runner.revoke", f"runner:{row.id}")
            rid = row.id
        return self.get(rid)


def _bound(s: Session, runner_id: str) -> int:
    from sqlalchemy import func

    return int(s.scalar(select(func.count()).select_from(EnvironmentRow)
                        .where(EnvironmentRow.runner_id == runner_id)) or 0)
