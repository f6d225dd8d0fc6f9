"""/api/v1/policy: the installation's policy. Everyone may read it (it says what they may ask for); admins set it."""

from __future__ import annotations

from fastapi import APIRouter

from flex.api import Policy
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.policy import get_policy, set_policy
from flex.controlplane.routes.deps import Admin, Cp, User

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/policy", tags=["policy"], responses=PROBLEM_RESPONSES)


@router.get("", response_model=Policy)
def read_policy(cp: Cp, who: User) -> Policy:
    return get_policy(cp.db)


@router.put("", response_model=Policy)
def write_policy(cp: Cp, who: Admin, body: Policy) -> Policy:
    """Replace the policy; it applies to environments created or changed from now on."""
    return set_policy(cp.db, who, body)
