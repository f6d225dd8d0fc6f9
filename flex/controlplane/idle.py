"""Idle auto-stop (issue 15): a running environment nobody uses is stopped after ``spec.idleTimeout``.

Activity is an open exec (or, later, SSH) session, or bytes through a port or preview: the access routes
call ``opened``/``closed``/``touch``. A log follow is not activity. An environment with a session open is
never idle; otherwise it is idle since its last activity, or since this replica first saw it Ready (so a
restarted control plane never stops anything early, and hooks still running are not idleness). After its
timeout (``spec.idleTimeout`` seconds; absent: the default its runner declared with ``flex runner run
--idle-timeout``, else the server's ``idle_timeout``, 30 minutes; 0: never) the control plane sets
``desiredPhase: stopped`` and records ``environment.idle-stop`` with reason ``Idle`` in the audit log. With
several replicas, the one holding the runner's tunnel decides: every stream of its environments passes
through it, direct or forwarded.

The sweep runs every ``interval`` seconds, sooner when an environment's timeout is shorter (half of the
shortest, at least a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import select as sa_select  # sqlmodel's select types at most four columns
from sqlmodel import col

from flex.controlplane import audit
from flex.controlplane.auth import Principal
from flex.controlplane.db import Database
from flex.controlplane.models import EnvironmentRow, RunnerRow
from flex.controlplane.store import Store
from flex.errors import FlexError

__all__ = ["IDLE_ACTOR", "IdleWatch"]

log = logging.getLogger("flex.controlplane.idle")

IDLE_ACTOR = Principal("user", "system", "idle-stop", admin=True, scopes=frozenset({"read", "write"}))


def _ready(status: dict[str, object]) -> bool:
    """Ready: hooks still running after the container started are not idleness."""
    conditions = status.get("conditions")
    return isinstance(conditions, list) and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class IdleWatch:
    def __init__(self, db: Database, store: Store, default_timeout: float, interval: float = 30.0,
                 elsewhere: Callable[[], set[str]] | None = None) -> None:
        self.db, self.store = db, store
        self.elsewhere = elsewhere  # runner ids whose tunnel another live replica holds
        self.default_timeout, self.interval = default_timeout, interval
        self._open: defaultdict[str, int] = defaultdict(int)
        self._last: dict[str, float] = {}

    # --- activity, from the access routes -------------------------------------------------------------
    def opened(self, env_id: str) -> None:
        self._open[env_id] += 1
        self._last[env_id] = time.monotonic()

    def closed(self, env_id: str) -> None:
        self._open[env_id] -= 1
        if self._open[env_id] <= 0:
            del self._open[env_id]
        self._last[env_id] = time.monotonic()

    def touch(self, env_id: str) -> None:
        self._last[env_id] = time.monotonic()

    # --- the sweep --------------------------------------------------------------------------------------
    def _timeout(self, spec: dict[str, object], runner_default: int | None = None) -> float:
        value = spec.get("idleTimeout")
        if isinstance(value, int | float):
            return float(value)
        return float(runner_default) if runner_default is not None else self.default_timeout

    def due(self) -> tuple[list[tuple[str, str, float]], float]:
        """(environments idle past their timeout as (id, name, idle seconds), seconds until the next sweep)."""
        now = time.monotonic()
        due: list[tuple[str, str, float]] = []
        shortest = self.interval
        with self.db.read() as s:
            table = EnvironmentRow.__table__.c  # type: ignore[attr-defined]
            spec_, status_ = table.spec, table.status
            rows = s.execute(sa_select(col(EnvironmentRow.id), col(EnvironmentRow.name), spec_, status_,
                                       col(RunnerRow.idle_timeout), col(EnvironmentRow.runner_id))
                             .join(RunnerRow, col(RunnerRow.id) == col(EnvironmentRow.runner_id), isouter=True)
                             .where(col(EnvironmentRow.runner_id).is_not(None),
                                    col(EnvironmentRow.deletion_timestamp).is_(None))).all()
        elsewhere = self.elsewhere() if self.elsewhere is not None else set()
        running = set()
        for env_id, name, spec, status, runner_default, runner_id in rows:
            if (spec or {}).get("desiredPhase", "running") != "running" or (status or {}).get("phase") != "running":
                continue
            running.add(env_id)
            timeout = self._timeout(spec or {}, runner_default)
            if timeout <= 0:
                continue
            shortest = min(shortest, max(1.0, timeout / 2))
            if not _ready(status or {}):
                self._last[env_id] = now  # its hooks still run: the clock starts at Ready
                continue
            if runner_id in elsewhere:  # that replica sees all its streams, forwarded ones too: it decides
                self._last[env_id] = now  # and should the tunnel come here, the clock starts from here
                continue
            last = self._last.setdefault(env_id, now)
            if env_id not in self._open and now - last >= timeout:
                due.append((env_id, name, now - last))
        for gone in set(self._last) - running - set(self._open):
            del self._last[gone]  # stopped or deleted: its clock starts again when it runs again
        return due, shortest

    def stop(self, env_id: str, idle: float) -> None:
        try:
            self.store.set_desired_phase(IDLE_ACTOR, env_id, "stopped")
        except FlexError as err:  # changed meanwhile (deleted, stopped by its owner): nothing to do
            log.info("idle stop of %s: %s", env_id, err)
            return
        with self.db.write() as s:
            row = s.get(EnvironmentRow, env_id)
            where = f"environment:{row.owner}/{row.name}" if row is not None else f"environment:{env_id}"
            audit.record(s, "system", "environment.idle-stop", where, reason="Idle", idle_seconds=round(idle))
        self._last.pop(env_id, None)
        log.info("stopped %s: idle for %.0f s", env_id, idle)

    async def run(self, stop: asyncio.Event) -> None:
        wait = 1.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                return
            try:
                due, wait = await asyncio.to_thread(self.due)
                for env_id, _name, idle in due:
                    await asyncio.to_thread(self.stop, env_id, idle)
            except Exception:  # a database hiccup: try again next round
                log.warning("idle sweep failed", exc_info=True)
                wait = self.interval
