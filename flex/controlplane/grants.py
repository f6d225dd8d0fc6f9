"""What an admin allowed a runner at join (api.RunnerGrant), and the checks of what the runner declares.

A runner is trusted for what it runs, not for what it says about itself: the labels and capacity it declares
at join and in heartbeats must stay inside its grant, so a rogue runner cannot claim unlimited room or any
label to attract other people's environments. Whose environments it takes is decided by the grant alone.
"""

from __future__ import annotations

from flex.api import RunnerCapacity, RunnerGrant
from flex.errors import PermissionDenied

__all__ = ["RESERVED_PREFIX", "check_declared", "serves"]

RESERVED_PREFIX = "flex.dev/"  # labels the control plane sets itself (flex.dev/kind)


def check_declared(grant: RunnerGrant, name: str, labels: dict[str, str] | None,
                   capacity: RunnerCapacity | None) -> None:
    """PermissionDenied naming the first label or resource the runner may not claim."""
    for key, value in sorted((labels or {}).items()):
        allowed = grant.labels.get(key)
        if key.startswith(RESERVED_PREFIX) or allowed not in ("*", value):
            raise PermissionDenied(f"runner {name!r} may not declare the label {key}={value}: its join token "
                                   f"allows {_labels(grant.labels)}",
                                   hint="ask an admin for a join token that allows it (labels in the grant)")
    cap = grant.max_capacity
    if capacity is None or cap is None:
        return
    for what, have, most in (("cpus", capacity.cpus, cap.cpus), ("memory", capacity.memory, cap.memory),
                             ("disk", capacity.disk, cap.disk)):
        if have > most:
            raise PermissionDenied(f"runner {name!r} may not declare {have:g} {what}: its join token allows at "
                                   f"most {most:g}", hint="declare less, or ask an admin for a larger grant")


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def serves(owner: str | None, users: frozenset[str], groups: frozenset[str], user: str,
           user_groups: frozenset[str]) -> bool:
    """May a runner (its owner, or the users and groups it is shared with) take an environment of ``user``?"""
    if owner is not None:
        return owner == user
    if not users and not groups:
        return True
    return user in users or bool(groups & user_groups)
