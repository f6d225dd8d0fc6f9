"""Moving an environment to another runner (issue 17.5): the body of ``POST .../{name}:move``, and the shared
backup repository the control plane gives its runners so that one runner can restore another's backup. No I/O."""

from __future__ import annotations

from pydantic import Field, model_validator

from flex.api.environments import Labels, check_labels
from flex.api.wire import WireModel

__all__ = ["BackupRepository", "EnvironmentMove"]


class EnvironmentMove(WireModel):
    """``{"runner": "r2"}`` (a runner's name or id) or ``{"runnerSelector": {"zone": "b"}}`` (any other runner
    with these labels, chosen as placement chooses)."""

    model_config = {**WireModel.model_config, "extra": "forbid"}
    runner: str | None = Field(None, min_length=1, max_length=63)
    runner_selector: Labels | None = None

    @model_validator(mode="after")
    def _one(self) -> EnvironmentMove:
        if (self.runner is None) == (self.runner_selector is None):
            raise ValueError("give exactly one of runner (a runner's name) or runnerSelector (labels)")
        if self.runner_selector is not None:
            check_labels(self.runner_selector, "runnerSelector")
        return self


class BackupRepository(WireModel):
    """``GET /api/v1/runners/{id}/backup-repository`` (runner credential only): where the installation's shared
    repository is and its password; ``env`` holds the store's credentials (AWS_ACCESS_KEY_ID, ...) for S3."""

    location: str
    password: str = Field(repr=False)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
