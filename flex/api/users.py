"""Users, API tokens and the audit log on the wire. No I/O; secrets appear only in the *Created answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from flex.api.environments import NAME_PATTERN
from flex.api.wire import WireModel

__all__ = ["AuditEvent", "AuditEventList", "GroupsUpdate", "Token", "TokenCreate", "TokenCreated", "TokenList", "User",
           "UserCreate", "UserCreated"]

Scope = Literal["read", "write"]


class UserCreate(WireModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    admin: bool = False
    groups: list[str] = Field(default_factory=list, max_length=100)  # for runner scopes and policy


class GroupsUpdate(WireModel):
    """``PUT /api/v1/users/{name}/groups``: the user's groups, replaced."""

    groups: list[str] = Field(max_length=100)


class User(WireModel):
    name: str
    admin: bool
    groups: list[str] = Field(default_factory=list)
    created_at: datetime


class UserCreated(WireModel):
    """The new user and their first token, shown once."""

    name: str
    token: str


class TokenCreate(WireModel):
    name: str = Field("token", min_length=1, max_length=63)
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read", "write"]), min_length=1)
    expires_at: datetime | None = None


class Token(WireModel):
    id: str
    name: str
    scopes: list[Scope]
    expires_at: datetime | None = None
    created_at: datetime
    last_used_at: datetime | None = None


class TokenCreated(Token):
    token: str


class TokenList(WireModel):
    items: list[Token]


class AuditEvent(WireModel):
    id: int
    time: datetime
    actor: str
    action: str
    resource: str
    details: dict[str, Any] = Field(default_factory=dict)


class AuditEventList(WireModel):
    items: list[AuditEvent]
    continue_: str | None = Field(None, alias="continue")
