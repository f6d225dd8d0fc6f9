"""Placement: which ready runner an environment is bound to. Sticky: once bound, an environment stays.

A runner fits when it is ready and not cordoned, takes this owner's environments (a personal runner only
its owner's; a shared one everyone's, or its users' and groups'), is the owner's desktop runner if the
source is on local disk, has labels (plus the implicit ``flex.dev/kind``) matching the environment's
``runnerSelector``, can isolate the environment from other users' (a rootless runner hosting several users
needs a subordinate id range per environment), and its declared capacity minus the requests of the
environments bound to it covers the new requests. Among those, the least loaded wins (largest share of any
resource in use, then fewest environments, then name, so ties are stable). The selector is applied only
after ownership, so it can never pull an environment onto someone else's runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import EnvironmentStatus, set_condition
from flex.controlplane.grants import serves
from flex.controlplane.models import EnvironmentRow, RunnerRow, UserRow

__all__ = ["Placement", "RunnerLoad", "Tenant", "bind", "bind_hinted", "bind_to", "load_of", "loads", "local_source",
           "pick", "tenant_of"]

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
    kind: str = "vm"
    owner: str | None = None
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    cordoned: bool = False
    rootless: bool = False
    id_ranges: int = 0
    disk_pressure: bool = False  # the runner says its machine's free disk is under its threshold
    owners: set[str] = field(default_factory=set)  # whose environments are bound to it

    def isolates(self, owner: str) -> bool:
        """A rootless runner keeps users apart only with an id range per environment once it hosts two users."""
        if not self.rootless or self.owners <= {owner}:
            return True
        return self.count + 1 <= self.id_ranges

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


@dataclass(frozen=True)
class Tenant:
    """Whose environment is being placed, and whether its source is on the runner's own disk."""

    owner: str
    groups: frozenset[str] = frozenset()
    local: bool = False


def local_source(spec: dict[str, Any]) -> bool:
    """api.Source.local on a stored (wire) spec."""
    source = spec.get("source") or {}
    return source.get("path") is not None or str(source.get("git") or "").startswith("file://")


def _names(runners: list[RunnerLoad]) -> str:
    return ", ".join(sorted(r.name for r in runners)[:5]) + (", ..." if len(runners) > 5 else "")


def pick(cpus: float, memory: int, disk: int, selector: dict[str, str], runners: list[RunnerLoad],
         tenant: Tenant) -> Placement:
    """Pure: the runner for these requests, or why there is none. Messages name only runners the owner may use."""
    ready = [r for r in runners if r.ready]
    if not ready:
        return Placement(None, "NoRunnerReady", "no runner is ready")
    ready = [r for r in ready if serves(r.owner, r.users, r.groups, tenant.owner, tenant.groups)]
    if not ready:
        return Placement(None, "NoRunnerAllowed", f"no ready runner takes environments of {tenant.owner} "
                         "(a personal runner takes only its owner's, a shared one may be limited to users or groups)")
    open_ = [r for r in ready if not r.cordoned]
    if not open_:
        return Placement(None, "RunnerCordoned", f"every runner you may use is cordoned: {_names(ready)}")
    ready = open_
    roomy = [r for r in ready if not r.disk_pressure]
    if not roomy:
        return Placement(None, "DiskPressure", f"every runner you may use is low on free disk: {_names(ready)}")
    ready = roomy
    if tenant.local:
        ready = [r for r in ready if r.kind == "desktop" and r.owner == tenant.owner]
        if not ready:
            return Placement(None, "NoDesktopRunner", "the source is on local disk (source.path or file://): only "
                             f"a desktop runner of {tenant.owner} can read it, and none is ready")
    matching = [r for r in ready if all(r.labels.get(k) == v for k, v in selector.items())]
    if not matching:
        want = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return Placement(None, "NoRunnerMatches", f"no ready runner has the labels {want}")
    isolating = [r for r in matching if r.isolates(tenant.owner)]
    if not isolating:
        return Placement(None, "CannotIsolate", f"runner(s) {_names(matching)} run rootless and have no "
                         "subordinate id range left to isolate another user's environment")
    matching = isolating
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
    q = select(t.id, t.name, t.labels, t.kind, t.state, t.cpus, t.memory, t.disk,  # type: ignore[call-overload]
               t.owner, t.allowance, t.cordoned, t.rootless, t.id_ranges, t.disk_pressure)
    if ready_only:
        q = q.where(t.state == "ready")
    out: dict[str, RunnerLoad] = {}
    for rid, name, labels, kind, state, cpus, memory, disk, owner, allowance, cordoned, rootless, ranges, \
            pressure in s.execute(q):
        out[rid] = RunnerLoad(rid, name, {**(_json(labels) or {}), KIND_LABEL: kind}, state == "ready",
                              float(cpus), int(memory), int(disk), **_tenancy(kind, owner, _json(allowance),
                                                                              cordoned, rootless, ranges, pressure))
    if not out:
        return []
    used = s.execute(select(col(EnvironmentRow.runner_id), func.sum(EnvironmentRow.req_cpus),  # type: ignore[call-overload]
                            func.sum(EnvironmentRow.req_memory), func.sum(EnvironmentRow.req_disk), func.count())
                     .where(col(EnvironmentRow.runner_id).is_not(None))
                     .group_by(EnvironmentRow.runner_id))
    for rid, c, m, d, n in used:
        if rid in out:
            load = out[rid]
            load.used_cpus, load.used_memory, load.used_disk, load.count = float(c or 0), int(m or 0), int(d or 0), n
    if any(r.rootless for r in out.values()):  # whose environments each runs decides whether it must isolate
        for rid, owner in s.execute(select(col(EnvironmentRow.runner_id), col(EnvironmentRow.owner)).distinct()
                                    .where(col(EnvironmentRow.runner_id).is_not(None))):
            if rid in out:
                out[rid].owners.add(owner)
    return list(out.values())


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _tenancy(kind: str, owner: str | None, allowance: dict[str, Any] | None, cordoned: Any, rootless: Any,
             ranges: Any, disk_pressure: Any = False) -> dict[str, Any]:
    allowance = allowance or {}
    return {"kind": kind, "owner": owner, "users": frozenset(allowance.get("users") or ()),
            "groups": frozenset(allowance.get("groups") or ()), "cordoned": bool(cordoned),
            "rootless": bool(rootless), "id_ranges": int(ranges or 0),
            "disk_pressure": bool(disk_pressure)}


def load_of(s: Session, row: RunnerRow) -> RunnerLoad:
    """One runner's load (a heartbeat's answer must not scan every runner)."""
    c, m, d, n = s.execute(select(func.sum(EnvironmentRow.req_cpus), func.sum(EnvironmentRow.req_memory),
                                  func.sum(EnvironmentRow.req_disk), func.count())
                           .where(col(EnvironmentRow.runner_id) == row.id)).one()
    load = RunnerLoad(row.id, row.name, {**row.labels, KIND_LABEL: row.kind}, row.state == "ready", row.cpus,
                      row.memory, row.disk, float(c or 0), int(m or 0), int(d or 0), int(n),
                      **_tenancy(row.kind, row.owner, row.allowance, row.cordoned, row.rootless, row.id_ranges,
                                row.disk_pressure))
    if row.rootless:
        load.owners = set(s.scalars(select(EnvironmentRow.owner).distinct().where(EnvironmentRow.runner_id == row.id)))
    return load


def tenant_of(s: Session, row: EnvironmentRow, runners: list[RunnerLoad]) -> Tenant:
    """The owner of ``row``, with their groups only when some runner is shared by group (saves a read)."""
    groups: frozenset[str] = frozenset()
    if any(r.groups for r in runners):
        found = s.scalars(select(UserRow.groups).where(UserRow.name == row.owner)).first()
        groups = frozenset(_json(found) or ())
    return Tenant(row.owner, groups, local_source(row.spec))


def bind(row: EnvironmentRow, runners: list[RunnerLoad], now: datetime, tenant: Tenant,
         selector: dict[str, str] | None = None) -> bool:
    """Try to bind an unbound environment; record the outcome as its ``Scheduled`` condition. True if changed.
    ``selector``: instead of the spec's runnerSelector (a runner named for a restore)."""
    status = EnvironmentStatus.model_validate(row.status)
    selector = dict(row.spec.get("runnerSelector") or {}) if selector is None else selector
    placed = pick(row.req_cpus, row.req_memory, row.req_disk, selector, runners, tenant)
    changed = set_condition(status, "Scheduled", placed.runner is not None, reason=placed.reason,
                            message=placed.message, now=now)  # no generation: a spec change is no news here
    if placed.runner is not None:
        r = placed.runner
        row.runner_id = status.runner_id = r.id
        r.used_cpus += row.req_cpus
        r.used_memory += row.req_memory
        r.used_disk += row.req_disk
        r.count += 1
        r.owners.add(row.owner)
        set_condition(status, "RunnerReady", True, reason="RunnerOnline", message=f"runner {r.name} is ready",
                      now=now)
        changed = True
    if changed:
        row.status = status.to_wire()
    return changed


def bind_hinted(s: Session, row: EnvironmentRow, hint: list[RunnerLoad] | None, now: datetime) -> bool:
    """bind(), but choose from ``hint`` (loads read before the write lock) and re-check only the chosen
    runner under the lock; the full scan runs under the lock only when the hint turns out stale."""
    selector = dict(row.spec.get("runnerSelector") or {})
    if hint is not None:
        tenant = tenant_of(s, row, hint)
        placed = pick(row.req_cpus, row.req_memory, row.req_disk, selector, hint, tenant)
        if placed.runner is not None:
            fresh = s.get(RunnerRow, placed.runner.id)
            if fresh is not None and fresh.state == "ready":
                load = load_of(s, fresh)
                if pick(row.req_cpus, row.req_memory, row.req_disk, selector, [load], tenant).runner is not None:
                    return bind(row, [load], now, tenant)
    runners = loads(s, ready_only=True)
    return bind(row, runners, now, tenant_of(s, row, runners))


def bind_to(s: Session, row: EnvironmentRow, runner_id: str, now: datetime) -> bool:
    """Bind to this one runner if it is ready and fits (a restore from its local repository); True if bound."""
    fresh = s.get(RunnerRow, runner_id)
    if fresh is None or fresh.state != "ready":
        return False
    load = load_of(s, fresh)
    bind(row, [load], now, tenant_of(s, row, [load]))
    return row.runner_id == runner_id
