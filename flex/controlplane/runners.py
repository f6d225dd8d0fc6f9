"""Runners joining, heartbeating and going offline, and retrying placement of unbound environments.

A runner silent for ``heartbeat_timeout`` seconds is marked offline and each environment bound to it gets
``RunnerReady=False`` (reason ``RunnerOffline``); its next heartbeat makes it ready again. Environments stay
bound meanwhile: their files live on that runner's disk.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from flex.api import (
    EnvironmentStatus,
    JoinRequest,
    JoinResponse,
    Runner,
    RunnerCapacity,
    RunnerHeartbeat,
    set_condition,
)
from flex.controlplane import audit, scheduler
from flex.controlplane.auth import RUNNER_PREFIX, Principal, hash_secret, new_secret
from flex.controlplane.db import Database
from flex.controlplane.models import EnvironmentRow, JoinTokenRow, RunnerRow
from flex.controlplane.store import emit, lock, utc
from flex.errors import AlreadyExists, NotFound, PermissionDenied, Unauthenticated

__all__ = ["Runners"]


def _wire(row: RunnerRow, load: scheduler.RunnerLoad | None) -> Runner:
    return Runner(
        id=row.id, name=row.name, kind=row.kind, labels=row.labels, state=row.state,
        capacity=RunnerCapacity(cpus=row.cpus, memory=row.memory, disk=row.disk),
        allocated=RunnerCapacity(cpus=load.used_cpus if load else 0, memory=load.used_memory if load else 0,
                                 disk=load.used_disk if load else 0),
        environments=load.count if load else 0, last_heartbeat=utc(row.last_heartbeat),
        created_at=utc(row.created_at),
    )


class Runners:
    def __init__(self, db: Database, heartbeat_timeout: float, on_commit: Callable[[], None],
                 on_runners_changed: Callable[[], None] = lambda: None,
                 writer: threading.Lock | None = None) -> None:
        self.db = db
        self.heartbeat_timeout = heartbeat_timeout
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
                                          hint="ask an admin for a new one (POST /api/v1/runners/join-tokens)")
                if s.scalars(select(RunnerRow).where(RunnerRow.name == body.name)).first() is not None:
                    raise AlreadyExists(f"a runner named {body.name!r} already exists")
                row = RunnerRow(id="run_" + uuid.uuid4().hex[:20], name=body.name, kind=body.kind,
                                cpus=body.capacity.cpus, memory=body.capacity.memory, disk=body.capacity.disk,
                                labels=body.labels, state="ready", credential_hash=hash_secret(credential),
                                last_heartbeat=now, created_at=now)
                s.add(row)
                s.execute(update(JoinTokenRow).where(col(JoinTokenRow.hash) == hash_secret(body.token))
                          .values(runner_id=row.id))
                audit.record(s, f"runner:{body.name}", "runner.join", f"runner:{row.id}", kind=body.kind,
                             labels=body.labels)
        except IntegrityError as err:
            raise AlreadyExists(f"a runner named {body.name!r} already exists") from err
        self.on_runners_changed()
        self.schedule_pending()
        return JoinResponse(id=row.id, credential=credential)

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
            row.last_heartbeat = now
            if body.capacity is not None:
                row.cpus, row.memory, row.disk = body.capacity.cpus, body.capacity.memory, body.capacity.disk
            if body.labels is not None:
                row.labels = body.labels
            came_back = row.state != "ready"
            s.flush()
            answer = _wire(row, scheduler.load_of(s, row))  # the common case: one transaction, no rescan
        if came_back or body.capacity is not None or body.labels is not None:
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

    def list_runners(self) -> list[Runner]:
        with self.db.read() as s:
            by_id = {r.id: r for r in scheduler.loads(s)}
            return [_wire(r, by_id.get(r.id)) for r in s.scalars(select(RunnerRow).order_by(RunnerRow.name))]

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
            for row in rows:
                if scheduler.bind(row, loads, now):
                    bound += row.runner_id is not None
                    emit(s, row, "MODIFIED", now)
        if bound:
            self.on_commit()
        return bound
