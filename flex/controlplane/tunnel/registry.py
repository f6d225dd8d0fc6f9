"""Where replicas are reached and which runner tunnels each holds, in the database (issue 15; docs/access.md,
"Several replicas").

Each replica has a random id per process, so a restarted one never claims its predecessor's tunnels. It
writes its row (id, advertise URL, ``seen_at``) at start and every ``heartbeat`` seconds; a row unseen for
``expiry`` seconds is a dead replica, and its tunnels count as held by no one. A tunnel row is written when
a runner's tunnel attaches and removed on detach, only if it still names this replica (the runner may have
moved to another one meanwhile).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from flex.controlplane.db import Database
from flex.controlplane.models import ReplicaRow, RunnerTunnelRow
from flex.controlplane.store import utc

__all__ = ["Registry"]


class Registry:
    def __init__(self, db: Database, url: str, heartbeat: float = 5.0) -> None:
        self.db, self.url, self.heartbeat = db, url, heartbeat
        self.id = "rep_" + secrets.token_hex(8)
        self.expiry = 3 * heartbeat

    def beat(self, held: Iterable[str] = ()) -> None:
        """Say this replica is alive; record the tunnels it holds that lost their row, and drop rows of tunnels
        it no longer holds (a release that failed); drop long-dead replicas."""
        now = datetime.now(UTC)
        held = set(held)
        with self.db.write() as s:
            row = s.get(ReplicaRow, self.id)
            if row is None:
                s.add(ReplicaRow(id=self.id, url=self.url, seen_at=now))
            else:
                row.seen_at, row.url = now, self.url
            for runner_id in held:  # only where no row is: a runner that moved on keeps its new holder
                if s.get(RunnerTunnelRow, runner_id) is None:
                    s.add(RunnerTunnelRow(runner_id=runner_id, replica_id=self.id, attached_at=now))
            # older than a heartbeat: a tunnel attaching while ``held`` was taken is not one of these
            s.execute(delete(RunnerTunnelRow).where(
                col(RunnerTunnelRow.replica_id) == self.id, col(RunnerTunnelRow.runner_id).not_in(held),
                col(RunnerTunnelRow.attached_at) < now - timedelta(seconds=self.heartbeat)))
            dead = [r.id for r in s.scalars(select(ReplicaRow).where(
                col(ReplicaRow.seen_at) < now - timedelta(seconds=20 * self.expiry)))]
            if dead:
                s.execute(delete(RunnerTunnelRow).where(col(RunnerTunnelRow.replica_id).in_(dead)))
                s.execute(delete(ReplicaRow).where(col(ReplicaRow.id).in_(dead)))

    def claim(self, runner_id: str) -> None:
        now = datetime.now(UTC)
        for attempt in range(2):  # two replicas inserting at once: the loser updates
            try:
                with self.db.write() as s:
                    row = s.get(RunnerTunnelRow, runner_id)
                    if row is None:
                        s.add(RunnerTunnelRow(runner_id=runner_id, replica_id=self.id, attached_at=now))
                    else:
                        row.replica_id, row.attached_at = self.id, now
                return
            except IntegrityError:
                if attempt:
                    raise

    def release(self, runner_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(RunnerTunnelRow).where(col(RunnerTunnelRow.runner_id) == runner_id,
                                                    col(RunnerTunnelRow.replica_id) == self.id))

    def holder(self, runner_id: str) -> str | None:
        """The URL of the live replica (not this one) holding ``runner_id``'s tunnel, if any."""
        with self.db.read() as s:
            tunnel = s.get(RunnerTunnelRow, runner_id)
            if tunnel is None or tunnel.replica_id == self.id:
                return None
            replica = s.get(ReplicaRow, tunnel.replica_id)
        if replica is None:
            return None
        seen = utc(replica.seen_at)
        if seen is None or seen < datetime.now(UTC) - timedelta(seconds=self.expiry):
            return None  # a dead replica's entry: no stream goes into the void
        return replica.url

    def held_elsewhere(self) -> set[str]:
        """Runner ids whose tunnel another live replica holds."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.expiry)
        with self.db.read() as s:
            rows = s.execute(select(RunnerTunnelRow.runner_id, ReplicaRow.seen_at)
                             .join(ReplicaRow, col(ReplicaRow.id) == col(RunnerTunnelRow.replica_id))
                             .where(col(RunnerTunnelRow.replica_id) != self.id)).all()
        return {runner_id for runner_id, seen in rows if (utc(seen) or cutoff) > cutoff}

    def retire(self) -> None:
        """On a clean stop: this replica and its tunnels are gone at once, not after ``expiry``."""
        with self.db.write() as s:
            s.execute(delete(RunnerTunnelRow).where(col(RunnerTunnelRow.replica_id) == self.id))
            s.execute(delete(ReplicaRow).where(col(ReplicaRow.id) == self.id))
