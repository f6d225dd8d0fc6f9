"""Secrets on the wire: write-only values, named like environment variables. No I/O.

A value travels in exactly two bodies: ``SecretPut`` (a user writing it) and ``RunnerSecrets`` (the runner an
environment is bound to reading it). Everything a user reads back (``Secret``) has names and scopes only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from flex.api.environments import ENV_KEY_PATTERN, NAME_PATTERN
from flex.api.wire import WireModel

__all__ = ["ALL_ENVIRONMENTS", "MAX_SECRET_BYTES", "RunnerSecret", "RunnerSecrets", "Secret", "SecretList",
           "SecretPut", "secret_applies"]

ALL_ENVIRONMENTS = "*"
Scope = Annotated[str, Field(pattern=rf"^(\*|{NAME_PATTERN[1:-1]})$", max_length=63)]
MAX_SECRET_BYTES = 32 * 1024  # Gitpod's limit for one environment variable


class SecretPut(WireModel):
    """``PUT /api/v1/secrets/{NAME}``: the value, and which of your environments get it as variable NAME."""

    # SecretStr: never shown by repr() or a log line; the schema marks it writeOnly.
    value: SecretStr = Field(max_length=MAX_SECRET_BYTES)
    environments: list[Scope] = Field(default_factory=lambda: [ALL_ENVIRONMENTS], max_length=1000,
                                      description='environment names, or "*" for all of yours')

    @field_validator("environments")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        return sorted(set(names))


class Secret(WireModel):
    """What a user reads back: the name and its scope, never the value."""

    name: str = Field(pattern=ENV_KEY_PATTERN)
    environments: list[str]
    created_at: datetime
    updated_at: datetime


class SecretList(WireModel):
    items: list[Secret]


class RunnerSecret(WireModel):
    name: str
    value: str


class RunnerSecrets(WireModel):
    """The secrets of one environment, for the runner it is bound to (variables it sets, beside spec.env)."""

    items: list[RunnerSecret]


def secret_applies(environments: list[str], env_name: str) -> bool:
    return ALL_ENVIRONMENTS in environments or env_name in environments
