"""/api/v1/users (admin creates users, each with a first token, and sets their groups) and /api/v1/users/me."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from flex.api import GroupsUpdate, UserCreate, UserCreated, WireModel
from flex.api import User as UserModel
from flex.controlplane.auth import create_user, list_users, set_groups
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.routes.deps import Admin, Cp, User

__all__ = ["UserList", "router"]

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=PROBLEM_RESPONSES)


class UserList(WireModel):
    items: list[UserModel] = Field(default_factory=list)


@router.post("", status_code=201, response_model=UserCreated)
def create_user_route(cp: Cp, who: Admin, body: UserCreate) -> UserCreated:
    """Create a user; the answer holds their first token, shown only this once."""
    return create_user(cp.db, who, body.name, body.admin, body.groups)


@router.get("", response_model=UserList)
def list_users_route(cp: Cp, who: Admin) -> UserList:
    return UserList(items=list_users(cp.db))


@router.get("/me", response_model=UserModel)
def me(cp: Cp, who: User) -> UserModel:
    return next(u for u in list_users(cp.db) if u.name == who.name)


@router.put("/{name}/groups", response_model=UserModel)
def set_groups_route(cp: Cp, who: Admin, name: str, body: GroupsUpdate) -> UserModel:
    """Replace a user's groups (they scope shared runners and the Docker policy)."""
    return set_groups(cp.db, who, name, body.groups)
