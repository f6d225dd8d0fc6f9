"""What a stage has built so far: its layers, its image config, its history, its cache key."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from flex.runtime.images.store import chain_ids

__all__ = ["State", "step_key"]


def step_key(parent: str, *parts: Any) -> str:
    data = json.dumps([parent, *parts], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


@dataclass
class State:
    key: str
    layers: list[dict[str, Any]] = field(default_factory=list)  # mediaType, digest, size, diffId
    config: dict[str, Any] = field(default_factory=dict)        # the OCI config's "config" object
    history: list[dict[str, Any]] = field(default_factory=list)
    platform: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)          # build args in scope (never stored)
    meta_args: dict[str, str] = field(default_factory=dict)

    @property
    def top(self) -> str | None:
        ids = chain_ids([lay["diffId"] for lay in self.layers])
        return ids[-1] if ids else None

    def saved(self) -> dict[str, Any]:
        return {"layers": self.layers, "config": self.config, "history": self.history}

    def restore(self, key: str, saved: dict[str, Any]) -> State:
        return State(key=key, layers=copy.deepcopy(saved["layers"]), config=copy.deepcopy(saved["config"]),
                     history=copy.deepcopy(saved["history"]), platform=dict(self.platform), args=dict(self.args),
                     meta_args=self.meta_args)

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def set_env(self, key: str, value: str) -> None:
        env = list(self.config.get("Env") or [])
        for i, item in enumerate(env):
            if item.partition("=")[0] == key:
                env[i] = f"{key}={value}"  # in place, as Docker keeps the order
                break
        else:
            env.append(f"{key}={value}")
        self.config["Env"] = env
