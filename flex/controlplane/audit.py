"""The append-only audit log: who did what to which resource. Callers pass no secrets; we also drop any
detail whose key sounds like one, as a second line of defence."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlmodel import select

from flex.api import AuditEvent, AuditEventList
from flex.errors import InvalidArgument

__all__ = ["list_events", "record"]

_SECRET_WORDS = ("token", "credential", "secret", "password", "hash")


def record(s: Session, actor: str, action: str, resource: str, **details: Any) -> None:
    from flex.controlplane.models import AuditRow

    clean = {k: v for k, v in details.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
    s.add(AuditRow(time=datetime.now(UTC), actor=actor, action=action, resource=resource, details=clean))


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def list_events(s: Session, *, actor: str | None, action: str | None, limit: int,
                cont: str | None) -> AuditEventList:
    """Newest first; ``continue`` pages towards older events."""
    from flex.controlplane.models import AuditRow

    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit + 1)  # type: ignore[union-attr]
    if actor:
        q = q.where(AuditRow.actor == actor)
    if action:
        q = q.where(AuditRow.action == action)
    if cont:
        try:
            before = int(base64.urlsafe_b64decode(cont.encode()).decode())
        except Exception as err:
            raise InvalidArgument(f"continue: {cont!r} is not a token this server gave out") from err
        q = q.where(AuditRow.id < before)  # type: ignore[operator]
    rows = list(s.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [AuditEvent(id=r.id or 0, time=_utc(r.time), actor=r.actor, action=r.action, resource=r.resource,
                        details=r.details) for r in rows]
    token = base64.urlsafe_b64encode(str(rows[-1].id).encode()).decode() if more and rows else None
    return AuditEventList(items=items, continue_=token)
