"""Runners: the machines environments run on, how they join, and what they report. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from flex.api.environments import NAME_PATTERN, check_labels, parse_duration
from flex.api.wire import Bytes, WireModel

__all__ = ["JoinRequest", "JoinResponse", "JoinToken", "Runner", "RunnerCapacity", "RunnerGrant", "RunnerHeartbeat",
           "RunnerList"]


class RunnerCapacity(WireModel):
    """Declared room on a runner (bytes for memory and disk; "64Gi" accepted)."""

    cpus: float = Field(ge=0, le=100_000)
    memory: Bytes = Field(ge=0, le=2**60)
    disk: Bytes = Field(ge=0, le=2**62)


class RunnerGrant(WireModel):
    """What an admin allows a runner when making its join token (the body of ``POST /api/v1/runners/join-tokens``).

    ``owner`` makes it a personal runner (a laptop): it takes only that user's environments. Without an owner it
    is the installation's, shared by everyone, or only by ``users`` and members of ``groups`` when given. The
    runner may declare only ``labels`` listed here (``"*"`` allows any value of that key) and at most
    ``maxCapacity``; what it declares beyond that, at join or in a heartbeat, is refused."""

    owner: str | None = Field(None, pattern=NAME_PATTERN, max_length=63)
    users: list[str] = Field(default_factory=list, max_length=1000)
    groups: list[str] = Field(default_factory=list, max_length=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    max_capacity: RunnerCapacity | None = None

    @model_validator(mode="after")
    def _check(self) -> RunnerGrant:
        if self.owner is not None and (self.users or self.groups):
            raise ValueError("a personal runner (owner) takes only its owner's environments: give no users or groups")
        check_labels(self.labels, "labels")
        return self


class JoinToken(WireModel):
    token: str
    expires_at: datetime
    grant: RunnerGrant = Field(default_factory=RunnerGrant)


class JoinRequest(WireModel):
    """``POST /api/v1/runners:join``: a single-use join token exchanged for a runner credential."""

    token: str = Field(min_length=1, max_length=256)
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    kind: Literal["desktop", "vm"]
    capacity: RunnerCapacity
    labels: dict[str, str] = Field(default_factory=dict)
    rootless: bool = False  # runs its containers without root: per-environment id ranges are limited
    id_ranges: int = Field(0, ge=0, le=1_000_000)  # how many per-environment subordinate id ranges it can give


class JoinResponse(WireModel):
    """A runner credential, shown once (also the answer of ``:rotate``); heartbeats renew it until expiresAt."""

    id: str
    credential: str
    expires_at: datetime | None = None


IdleTimeout = Annotated[Annotated[int, Field(ge=0, le=366 * 86400)], BeforeValidator(parse_duration)]


class RunnerHeartbeat(WireModel):
    """Optional news with a heartbeat: a changed capacity, labels, or id ranges."""

    capacity: RunnerCapacity | None = None
    labels: dict[str, str] | None = None
    rootless: bool | None = None
    id_ranges: int | None = Field(None, ge=0, le=1_000_000)
    # the machine's free disk is under the runner's threshold (--min-free-disk): place nothing new there
    disk_pressure: bool | None = None
    # issue 15: the runner's default idleTimeout (seconds, or "30m") for environments whose spec has none; 0:
    # never. Sent (null: none) only when given: absent is no news, like the fields above.
    idle_timeout: IdleTimeout | None = None
    # issue 17.5: "shared" when it backs up into the control plane's shared repository, "own" when into its own
    # (FLEX_BACKUP_REPO or FLEX_HOME/backups); a move needs both runners on the shared one
    backup_repository: Literal["shared", "own"] | None = None


class Runner(WireModel):
    id: str
    name: str
    kind: Literal["desktop", "vm"]
    capacity: RunnerCapacity
    allocated: RunnerCapacity
    labels: dict[str, str] = Field(default_factory=dict)
    state: Literal["ready", "offline"]
    cordoned: bool = False  # takes no new environments
    owner: str | None = None
    grant: RunnerGrant = Field(default_factory=RunnerGrant)
    rootless: bool = False
    id_ranges: int = 0
    disk_pressure: bool = False
    credential_expires_at: datetime | None = None
    idle_timeout: int | None = None  # its declared default for environments without spec.idleTimeout
    backup_repository: str | None = None  # "shared" or "own" (issue 17.5), as it last said
    environments: int = 0
    last_heartbeat: datetime | None = None
    created_at: datetime


class RunnerList(WireModel):
    items: list[Runner]
