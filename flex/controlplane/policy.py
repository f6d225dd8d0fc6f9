"""The installation's policy (api.Policy, one row): who may ask for nested Docker, per-user limits on
environments and resources, and the memory of an environment that asks for none.

The checks run inside the environment write transaction, after lock(): counting a user's environments and
adding one cannot race another create, on this replica or any other.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.orm import Session
from sqlmodel import col, select

from flex.api import EnvironmentSpec, Policy
from flex.controlplane import audit
from flex.controlplane.auth import Principal
from flex.controlplane.db import Database
from flex.controlplane.models import EnvironmentRow, PolicyRow, UserRow
from flex.errors import PermissionDenied

__all__ = ["check_docker", "check_limits", "get_policy", "load_policy", "set_policy", "with_default_memory"]


def load_policy(s: Session) -> Policy:
    row = s.get(PolicyRow, 1)
    return Policy() if row is None else Policy.model_validate(row.data)


def get_policy(db: Database) -> Policy:
    with db.read() as s:
        return load_policy(s)


def set_policy(db: Database, who: Principal, policy: Policy) -> Policy:
    with db.write() as s:
        row = s.get(PolicyRow, 1)
        if row is None:
            s.add(PolicyRow(id=1, data=policy.to_wire()))
        else:
            row.data = policy.to_wire()
        audit.record(s, who.actor, "policy.update", "policy", docker=policy.docker.allowed,
                     user_limits=policy.user_limits.to_wire(), overrides=sorted(policy.user_overrides))
    return policy


def with_default_memory(policy: Policy, spec: EnvironmentSpec) -> EnvironmentSpec:
    """The spec with the policy's default memory, unless it asked for memory itself."""
    asked = "resources" in spec.model_fields_set and "memory" in spec.resources.model_fields_set
    if policy.default_memory is None or asked:
        return spec
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"memory": policy.default_memory})})


def check_docker(s: Session, policy: Policy, who: Principal) -> None:
    """PermissionDenied unless ``who`` may ask for nested Docker (spec.docker)."""
    rule = policy.docker
    if rule.allowed == "everyone" or who.admin:
        return
    if rule.allowed == "listed":
        if who.name in rule.users:
            return
        groups = s.scalars(select(UserRow.groups).where(UserRow.id == who.id)).first() or []
        if set(groups) & set(rule.groups):
            return
    whom = "admins" if rule.allowed == "admins" else "admins and the users and groups an admin listed"
    raise PermissionDenied(f"spec.docker: nested Docker is for {whom} here",
                           hint="drop --docker (spec.docker false), or ask an admin to allow it in the policy")


def check_limits(s: Session, policy: Policy, owner: str, spec: EnvironmentSpec, *,
                 replacing: str | None = None) -> None:
    """PermissionDenied if ``owner``'s environments, with this one (instead of ``replacing``), would exceed
    their limits. Environments being deleted no longer count."""
    limits = policy.user_overrides.get(owner, policy.user_limits)
    if all(v is None for v in (limits.environments, limits.cpus, limits.memory, limits.disk)):
        return
    q = (select(func.count(), func.sum(EnvironmentRow.req_cpus), func.sum(EnvironmentRow.req_memory),
                func.sum(EnvironmentRow.req_disk))
         .where(EnvironmentRow.owner == owner, col(EnvironmentRow.deletion_timestamp).is_(None)))
    if replacing is not None:
        q = q.where(EnvironmentRow.id != replacing)
    n, cpus, memory, disk = s.execute(q).one()
    r = spec.resources
    hint = "delete or shrink one of your environments, or ask an admin to raise your limit"
    if limits.environments is not None and int(n) + 1 > limits.environments:
        raise PermissionDenied(f"{owner} already has {n} environment(s), the most a user may have here", hint=hint)
    for what, used, want, most in (("cpus", float(cpus or 0), r.cpus, limits.cpus),
                                   ("memory", int(memory or 0), r.memory, limits.memory),
                                   ("disk", int(disk or 0), r.disk, limits.disk)):
        if most is not None and used + want > most + 1e-9:
            raise PermissionDenied(f"spec.resources.{what}: {owner}'s environments would hold {used + want:g} "
                                   f"{what}, over the limit of {most:g}", hint=hint)
