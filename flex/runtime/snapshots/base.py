"""The Snapshotter protocol and its value types (containerd's model).

Snapshots are filesystem states with a parent:

    Import a layer:  prepare("extract-…", parent) → write the diff into its directory → commit("sha256:<chain id>", key)
    Run:             prepare(ctr_key, image_top) → mounts(ctr_key) → … → remove(ctr_key)
    Read only:       view(key, image_top) → mounts(key) → … → remove(key)

An *active* snapshot is writable and can be committed once; a *committed* one is read-only and may be
a parent; a *view* is a read-only active snapshot that cannot be committed. A snapshot with children
cannot be removed. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from flex.runtime.base.mount import Mount

__all__ = ["Info", "Kind", "Snapshotter", "Usage"]


class Kind(enum.StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    VIEW = "view"


@dataclass(frozen=True)
class Info:
    key: str
    kind: Kind
    parent: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    # "unshifted" (in-image ids on disk; root runners idmap the lower dirs per container) or
    # "shifted:<inside>:<outside>:<count>,..." (ids already mapped at unpack time; rootless runners)
    ownership: str = "unshifted"


@dataclass(frozen=True)
class Usage:
    size: int  # bytes used by this snapshot's own directory (not its parents)
    inodes: int


class Snapshotter(Protocol):
    def stat(self, key: str) -> Info: ...
    def prepare(self, key: str, parent: str | None = None, *,
                labels: Mapping[str, str] | None = None) -> list[Mount]: ...
    def view(self, key: str, parent: str, *, labels: Mapping[str, str] | None = None) -> list[Mount]: ...
    def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None: ...
    def mounts(self, key: str) -> list[Mount]: ...
    def remove(self, key: str) -> None: ...
    def walk(self) -> Iterator[Info]: ...
    def usage(self, key: str) -> Usage: ...
