"""The installation's policy, set by an admin: who may ask for nested Docker, per-user limits, default memory.

No I/O.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flex.api.wire import Bytes, WireModel

__all__ = ["DockerPolicy", "Policy", "UserLimits"]


class _Strict(WireModel):
    model_config = {**WireModel.model_config, "extra": "forbid"}


class DockerPolicy(_Strict):
    """Who may set ``spec.docker``: everyone, admins only, or admins and the listed users and groups."""

    allowed: Literal["everyone", "admins", "listed"] = "everyone"
    users: list[str] = Field(default_factory=list, max_length=10_000)
    groups: list[str] = Field(default_factory=list, max_length=1000)


class UserLimits(_Strict):
    """The most one user's environments may hold together (requests, whatever their phase); null: no limit."""

    environments: int | None = Field(None, ge=0)
    cpus: float | None = Field(None, ge=0)
    memory: Bytes | None = Field(None, ge=0)
    disk: Bytes | None = Field(None, ge=0)


class Policy(_Strict):
    """``GET``/``PUT /api/v1/policy``. ``userLimits`` holds for every user unless ``userOverrides`` names them;
    ``defaultMemory`` is the memory of an environment that does not ask for any."""

    docker: DockerPolicy = Field(default_factory=DockerPolicy)
    user_limits: UserLimits = Field(default_factory=UserLimits)
    user_overrides: dict[str, UserLimits] = Field(default_factory=dict)
    default_memory: Bytes | None = Field(None, gt=0, le=2**50)
