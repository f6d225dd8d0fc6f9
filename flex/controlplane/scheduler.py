"""Placement: which ready runner an environment is bound to. Sticky: once bound, an environment stays.

A runner fits when it is ready, its labels (plus the implicit ``flex.dev/kind``) match the environment's
``runnerSelector``, and its declared capacity minus the requests of the environments bound to it covers
the new requests. Among those, the least loaded wins (largest share of any resource in use, then fewest
environments, then name, so ties are stable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import EnvironmentStatus, set_condition
from flex.controlplane.models import EnvironmentRow, RunnerRow

__all__ = ["Placement", "RunnerLoad", "bind", "bind_hinted", "load_of", "loads", "pick"]

KIND_LABEL = "flex.dev/kind"


@dataclass
class RunnerLoad:
    id: str
    name: str
    labels: dict[str, str]
    ready: bool
    cpus: float
    memory: int
    disk: int
    used_cpus: float = 0.0
    used_memory: int = 0
    used_disk: int = 0
    count: int = 0

    def load(self) -> float:
        shares = [u / c if c else (1.0 if u else 0.0) for u, c in
                  ((self.used_cpus, self.cpus), (self.used_memory, self.memory), (self.used_disk, self.disk))]
        return max(shares)

    def fits(self, cpus: float, memory: int, disk: int) -> bool:
        return (self.used_cpus + cpus <= self.cpus + 1e-9 and self.used_memory + memory <= self.memory
                and self.used_disk + disk <= self.disk)


@dataclass
class Placement:
    runner: RunnerLoad | None
    reason: str
    message: str


def pick(cpus: float, memory: int, disk: int, selector: dict[str, str], runners: list[RunnerLoad]) -> Placement:
    """Pure: the runner for these requests, or why there is none."""
    ready = [r for r in runners if r.ready]
    if not ready:
        return Placement(None, "NoRunnerReady", "no runner is ready")
    matching = [r for r in ready if all(r.labels.get(k) == v for k, v in selector.items())]
    if not matching:
        want = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return Placement(None, "NoRunnerMatches", f"no ready runner has the labels {want}")
    fitting = [r for r in matching if r.fits(cpus, memory, disk)]
    if not fitting:
        return Placement(None, "InsufficientCapacity",
                         f"{len(matching)} matching runner(s), none with room for {cpus:g} cpus, "
                         f"{memory} bytes of memory and {disk} bytes of disk")
    best = min(fitting, key=lambda r: (r.load(), r.count, r.name))
    return Placement(best, "Scheduled", f"bound to runner {best.name}")


def loads(s: Session, *, ready_only: bool = False) -> list[RunnerLoad]:
    """Every runner (or every ready one) with the requests of the environments bound to it.

    Plain column reads, not ORM objects: this runs inside the write lock on every create."""
    t = RunnerRow.__table__.c  # type: ignore[attr-defined]
    q = select(t.id, t.name, t.labels, t.kind, t.state, t.cpus, t.memory, t.disk)  # type: ignore[call-overload]
    if ready_only:
        q = q.where(t.state == "ready")
    out: dict[str, RunnerLoad] = {}
    for rid, name, labels, kind, state, cpus, memory, disk in s.execute(q):
        if isinstance(labels, str):
            labels = json.loads(labels)
        out[rid] = RunnerLoad(rid, name, {**(labels or {}), KIND_LABEL: kind}, state == "ready",
                              float(cpus), int(memory), int(disk))
    used = s.execute(select(col(EnvironmentRow.runner_id), func.sum(EnvironmentRow.req_cpus),  # type: ignore[call-overload]
                            func.sum(EnvironmentRow.req_memory), func.sum(EnvironmentRow.req_disk), func.count())
                     .where(col(EnvironmentRow.runner_id).is_not(None))
                     .group_by(EnvironmentRow.runner_id))
    for rid, c, m, d, n in used:
        if rid in out:
            load = out[rid]
            load.used_cpus, load.used_memory, load.used_disk, load.count = float(c or 0), int(m or 0), int(d or 0), n
    return list(out.values())


def load_of(s: Session, row: RunnerRow) -> RunnerLoad:
    """One runner's load (a heartbeat's answer must not scan every runner)."""
    c, m, d, n = s.execute(select(func.sum(EnvironmentRow.req_cpus), func.sum(EnvironmentRow.req_memory),
                                  func.sum(EnvironmentRow.req_disk), func.count())
                           .where(col(EnvironmentRow.runner_id) == row.id)).one()
    return RunnerLoad(row.id, row.name, {**row.labels, KIND_LABEL: row.kind}, row.state == "ready", row.cpus,
                      row.memory, row.disk, float(c or 0), int(m or 0), int(d or 0), int(n))


def bind(row: EnvironmentRow, runners: list[RunnerLoad], now: datetime) -> bool:
    """Try to bind an unbound environment; record the outcome as its ``Scheduled`` condition. True if changed."""
    status = EnvironmentStatus.model_validate(row.status)
    selector = dict(row.spec.get("runnerSelector") or {})
    placed = pick(row.req_cpus, row.req_memory, row.req_disk, selector, runners)
    changed = set_condition(status, "Scheduled", placed.runner is not None, reason=placed.reason,
                            message=placed.message, now=now)  # no generation: a spec change is no news here
    if placed.runner is not None:
        r = placed.runner
        row.runner_id = status.runner_id = r.id
        r.used_cpus += row.req_cpus
        r.used_memory += row.req_memory
        r.used_disk += row.req_disk
        r.count += 1
        set_condition(status, "RunnerReady", True, reason="RunnerOnline", message=f"runner {r.name} is ready",
                      now=now)
        changed = True
    if changed:
        row.status = status.to_wire()
    return changed


def bind_hinted(s: Session, row: EnvironmentRow, hint: list[RunnerLoad] | None, now: datetime) -> bool:
    """bind(), but choose from ``hint`` (loads read before the write lock) and re-check only the chosen
    runner under the lock; the full scan runs under the lock only when the hint turns out stale."""
    if hint is not None:
        placed = pick(row.req_cpus, row.req_memory, row.req_disk, dict(row.spec.get("runnerSelector") or {}), hint)
        if placed.runner is not None:
            fresh = s.get(RunnerRow, placed.runner.id)
            if fresh is not None and fresh.state == "ready":
                load = load_of(s, fresh)
                if load.fits(row.req_cpus, row.req_memory, row.req_disk):
                    return bind(row, [load], now)
    return bind(row, loads(s, ready_only=True), now)
