"""Environment {metadata, spec, status}: what users ask for (spec) and what runners observed (status). No I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from flex.api.backup_spec import BackupSpec, LastBackup, MoveSpec, RestoreFrom
from flex.api.wire import Bytes, WireModel

__all__ = [
    "PHASES",
    "Condition",
    "DevcontainerRef",
    "Environment",
    "EnvironmentCreate",
    "EnvironmentList",
    "EnvironmentMetadata",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ListMeta",
    "Port",
    "PortStatus",
    "Resources",
    "Source",
    "WatchEvent",
    "check_labels",
    "parse_duration",
    "set_condition",
]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
GIT_PATTERN = r"^(https?://|ssh://|git://|file://|git@)\S+$"

Phase = Literal["pending", "building", "starting", "running", "stopping", "stopped", "failed", "deleting"]
PHASES: tuple[str, ...] = ("pending", "building", "starting", "running", "stopping", "stopped", "failed", "deleting")
Labels = dict[str, str]
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``"30m"`` → 1800, ``"90s"`` → 90, ``"2h"`` → 7200; numbers pass through; anything else is pydantic's."""
    if isinstance(value, str) and value[-1:] in _DURATION_UNITS and value[:-1].strip().isdigit():
        return int(value[:-1]) * _DURATION_UNITS[value[-1]]
    return value


class _Strict(WireModel):
    model_config = {**WireModel.model_config, "extra": "forbid"}


class Source(_Strict):
    """Where the code comes from: a git repository (and ref), or a folder on a desktop runner."""

    git: str | None = Field(None, pattern=GIT_PATTERN, max_length=2048)
    ref: str | None = Field(None, min_length=1, max_length=255)
    path: str | None = Field(None, pattern=r"^/", max_length=4096)

    @model_validator(mode="after")
    def _one_source(self) -> Source:
        if (self.git is None) == (self.path is None):
            raise ValueError("give exactly one of source.git (a repository URL) or source.path (a local folder)")
        if self.ref is not None and self.git is None:
            raise ValueError("source.ref needs source.git")
        return self

    @property
    def local(self) -> bool:
        """Read from the runner's own disk (a folder, or a file:// repository): only the owner's desktop runner may."""
        return self.path is not None or (self.git or "").startswith("file://")


class DevcontainerRef(_Strict):
    """The devcontainer: a path inside the source, or an inline devcontainer.json; neither means auto-detect."""

    path: str | None = Field(None, min_length=1, max_length=1024)
    config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_both(self) -> DevcontainerRef:
        if self.path is not None and self.config is not None:
            raise ValueError("give devcontainer.path or devcontainer.config, not both")
        if self.path is not None and (self.path.startswith("/") or ".." in self.path.split("/")):
            raise ValueError("devcontainer.path must be relative to the source and stay inside it")
        return self


class Resources(_Strict):
    """What an environment requests from its runner (bytes for memory and disk; "4Gi" accepted)."""

    cpus: float = Field(1.0, gt=0, le=1024)
    memory: Bytes = Field(2 * 2**30, gt=0, le=2**50)
    disk: Bytes = Field(10 * 2**30, gt=0, le=2**60)


class Port(_Strict):
    port: int = Field(ge=1, le=65535)
    name: str | None = Field(None, max_length=63)
    protocol: Literal["http", "https", "tcp"] = "http"
    # issue 15: who may open its preview URL (/p/OWNER/ENV/PORT/): the owner only (absent: private, unless
    # the devcontainer's portsAttributes says public), or anyone. Left out of the wire form when unset.
    visibility: Literal["private", "public"] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_visibility(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("visibility", "") is None:
            del out["visibility"]
        return out


class EnvironmentSpec(_Strict):
    """Desired state, written by users."""

    source: Source
    devcontainer: DevcontainerRef = Field(default_factory=DevcontainerRef)
    desired_phase: Literal["running", "stopped"] = "running"
    resources: Resources = Field(default_factory=Resources)
    docker: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[Port] = Field(default_factory=list, max_length=100)
    runner_selector: Labels = Field(default_factory=dict)
    # A digest of the devcontainer files (config, Dockerfile, local features) `flex up` saw: an edit changes
    # the spec, so its generation, and the runner recreates the container (issue 16).
    config_hash: str | None = Field(None, max_length=128)
    # issue 15: stop after this long without access (seconds, or "30m", "2h"); absent: the server's default
    # (30 minutes); 0: never. Left out of the wire form when unset, so specs written before it compare equal.
    idle_timeout: Annotated[Annotated[int, Field(ge=0, le=366 * 86400)] | None, BeforeValidator(parse_duration)] = None
    # issue 17: the newest backup asked for (written by the server), and the backup this environment starts from
    backup: BackupSpec | None = None
    restore_from: RestoreFrom | None = None
    # issue 18: bumped by POST .../{name}:rebuild; a new value means a new container from the same spec (the
    # runner's fingerprint holds it), on the same workspace volume. Left out of the wire form when unset.
    rebuild: int | None = Field(None, ge=0, le=2**62)
    # issue 17.5: a move to another runner in progress (written by the server: POST .../{name}:move)
    move: MoveSpec | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_idle(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key in ("idleTimeout", "idle_timeout", "backup", "restoreFrom", "restore_from", "rebuild", "move"):
            if key in out and out[key] is None:
                del out[key]
        return out

    @model_validator(mode="after")
    def _check(self) -> EnvironmentSpec:
        import re

        for key in self.env:
            if not re.match(ENV_KEY_PATTERN, key):
                raise ValueError(f"spec.env: {key!r} is not a valid variable name")
        seen = [p.port for p in self.ports]
        if len(seen) != len(set(seen)):
            raise ValueError("spec.ports: a port is listed twice")
        check_labels(self.runner_selector, "spec.runnerSelector")
        return self


def check_labels(labels: Labels, where: str) -> None:
    """ValueError naming ``where`` if a key is not a label key or a value is too long."""
    import re

    for key, value in labels.items():
        if not re.match(LABEL_KEY_PATTERN, key):
            raise ValueError(f"{where}: {key!r} is not a valid label key")
        if len(value) > 63:
            raise ValueError(f"{where}: the value of {key!r} is longer than 63 characters")


class Condition(WireModel):
    """One observation: ``Scheduled``, ``Ready``, ``RunnerReady``... with a machine reason and a human message."""

    type: str = Field(min_length=1, max_length=63)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field("", max_length=63)
    message: str = Field("", max_length=4096)
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class PortStatus(WireModel):
    port: int
    url: str | None = None  # the preview URL; the control plane fills it in
    visibility: Literal["private", "public"] | None = None  # from the devcontainer's portsAttributes


class EnvironmentStatus(WireModel):
    """Observed state, written only by the runner the environment is assigned to."""

    phase: Phase = "pending"
    observed_generation: int = Field(0, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=64)
    runner_id: str | None = None
    ports: list[PortStatus] = Field(default_factory=list, max_length=100)
    last_backup: LastBackup | None = None
    message: str | None = Field(None, max_length=4096)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class EnvironmentMetadata(WireModel):
    id: str
    name: str
    owner: str
    labels: Labels = Field(default_factory=dict)
    generation: int
    resource_version: int
    created_at: datetime
    updated_at: datetime
    deletion_timestamp: datetime | None = None

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None


class Environment(WireModel):
    metadata: EnvironmentMetadata
    spec: EnvironmentSpec
    status: EnvironmentStatus = Field(default_factory=EnvironmentStatus)


class EnvironmentCreate(_Strict):
    """The body of ``POST /api/v1/environments``: ``{"name": "e1", "spec": {"source": {"git": ...}}}``."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    labels: Labels = Field(default_factory=dict)
    spec: EnvironmentSpec

    @model_validator(mode="after")
    def _check(self) -> EnvironmentCreate:
        check_labels(self.labels, "labels")
        return self


class ListMeta(WireModel):
    resource_version: int
    continue_: str | None = Field(None, alias="continue")


class EnvironmentList(WireModel):
    items: list[Environment]
    metadata: ListMeta


class WatchEvent(WireModel):
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: Environment


def set_condition(status: EnvironmentStatus, type_: str, value: bool | None, *, reason: str = "",
                  message: str = "", generation: int | None = None, now: datetime | None = None) -> bool:
    """Set one condition; the transition time moves only when the status flips. Returns True if anything changed."""
    text = "Unknown" if value is None else ("True" if value else "False")
    now = now or datetime.now(UTC)
    old = status.condition(type_)
    if old is None:
        status.conditions.append(Condition(type=type_, status=text, reason=reason, message=message,
                                           last_transition_time=now, observed_generation=generation))
        return True
    changed = (old.status, old.reason, old.message, old.observed_generation) != (text, reason, message, generation)
    if old.status != text:
        old.last_transition_time = now
    old.status, old.reason, old.message, old.observed_generation = text, reason, message, generation  # type: ignore[assignment]
    return changed
