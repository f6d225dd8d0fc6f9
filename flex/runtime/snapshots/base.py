"""The Snapshotter protocol and its value types (containerd's model).

Snapshots are filesystem states with a parent:

    Import a layer:  prepare("extract-…", parent) → write the diff into dir(key) → commit("sha256:<chain id>", key)
    Run:             prepare(ctr_key, image_top) returns the mounts → mount them → … → remove(ctr_key)

For example, two layers and a container on top::

    snaps.prepare("extract-1")                    # [Mount("bind", ".../1/fs", options=("rbind", "rw"))]
    apply_tar(snaps.dir("extract-1"), layer1)
    snaps.commit("sha256:a", "extract-1")
    snaps.prepare("extract-2", "sha256:a"); apply_tar(snaps.dir("extract-2"), layer2, lowers=snaps.lowers("sha256:a"))
    snaps.commit("sha256:b", "extract-2")
    snaps.prepare("ctr", "sha256:b")              # [Mount("overlay", …, lowerdir=.../2/fs:.../1/fs, upperdir=…)]

An *active* snapshot is writable and can be committed once; a *committed* one is read-only and may be
a parent. A snapshot with children cannot be removed. Beyond ``Snapshotter``, small separate protocols
name what a user genuinely needs: ``Directories`` (a snapshot is a directory: unpack writes into it,
containers stack its lower dirs) and ``Cleaner`` (crash leftovers, for GC). Imports nothing from flex
but flex.errors.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from flex.runtime.base.mount import Mount

__all__ = ["Cleaner", "Directories", "DirectorySnapshotter", "Info", "Kind", "Snapshotter", "Usage"]


class Kind(enum.StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"


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
    def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None: ...
    def remove(self, key: str) -> None: ...
    def walk(self) -> Iterator[Info]: ...
    def usage(self, key: str) -> Usage: ...


class Directories(Protocol):
    """Snapshots that are directories on this machine, with the ownership their files are stored in
    ("unshifted", or "shifted:…" when ids were mapped at unpack time; see ``Info.ownership``)."""

    @property
    def ownership(self) -> str: ...
    def dir(self, key: str) -> Path: ...
    def lowers(self, key: str) -> list[Path]: ...
    # GC's two-phase removal: the record goes inside GC's transaction, the tree after it commits
    def forget(self, key: str) -> Path: ...
    def remove_dir(self, path: Path) -> int: ...


class DirectorySnapshotter(Snapshotter, Directories, Protocol):
    """What unpack and the image store need: a Snapshotter whose snapshots are directories."""


@runtime_checkable
class Cleaner(Protocol):
    def cleanup(self) -> int: ...
