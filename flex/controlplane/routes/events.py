"""/api/v1/events: the audit log. An admin reads everything; a user reads what they did."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from flex.api import AuditEventList
from flex.controlplane.audit import list_events
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.routes.deps import Cp, User

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/events", tags=["events"], responses=PROBLEM_RESPONSES)


@router.get("", response_model=AuditEventList)
def audit_events(cp: Cp, who: User,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 continue_: Annotated[str | None, Query(alias="continue", max_length=1024)] = None,
                 actor: Annotated[str | None, Query(max_length=200, description="e.g. user:alice")] = None,
                 action: Annotated[str | None, Query(max_length=200, description="e.g. environment.create")] = None,
                 ) -> AuditEventList:
    if not who.admin:
        actor = who.actor
    with cp.db.read() as s:
        return list_events(s, actor=actor, action=action, limit=limit, cont=continue_)
