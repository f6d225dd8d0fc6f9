"""Runners: the machines environments run on, how they join, and what they report. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from flex.api.environments import NAME_PATTERN
from flex.api.wire import Bytes, WireModel

__all__ = ["JoinRequest", "JoinResponse", "JoinToken", "Runner", "RunnerCapacity", "RunnerHeartbeat", "RunnerList"]


class RunnerCapacity(WireModel):
    """Declared room on a runner (bytes for memory and disk; "64Gi" accepted)."""

    cpus: float = Field(ge=0, le=100_000)
    memory: Bytes = Field(ge=0, le=2**60)
    disk: Bytes = Field(ge=0, le=2**62)


class JoinToken(WireModel):
    token: str
    expires_at: datetime


class JoinRequest(WireModel):
    """``POST /api/v1/runners:join``: a single-use join token exchanged for a runner credential."""

    token: str = Field(min_length=1, max_length=256)
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    kind: Literal["desktop", "vm"]
    capacity: RunnerCapacity
    labels: dict[str, str] = Field(default_factory=dict)


class JoinResponse(WireModel):
    id: str
    credential: str


class RunnerHeartbeat(WireModel):
    """Optional news with a heartbeat: a changed capacity or labels."""

    capacity: RunnerCapacity | None = None
    labels: dict[str, str] | None = None


class Runner(WireModel):
    id: str
    name: str
    kind: Literal["desktop", "vm"]
    capacity: RunnerCapacity
    allocated: RunnerCapacity
    labels: dict[str, str] = Field(default_factory=dict)
    state: Literal["ready", "offline"]
    environments: int = 0
    last_heartbeat: datetime | None = None
    created_at: datetime


class RunnerList(WireModel):
    items: list[Runner]
