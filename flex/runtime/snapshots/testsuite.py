"""A conformance suite for the Snapshotter protocol (after containerd's snapshots/testsuite).

Each check in ``CHECKS`` takes a fresh, empty snapshotter and a scratch directory, and raises
AssertionError (or the unexpected error) when the snapshotter breaks the contract of base.py. The suite
writes files through ``Directories.dir``, so it needs a ``DirectorySnapshotter``; a check the host
cannot run (mounting needs root) raises ``Unsupported``. Tests run it per implementation, e.g.
``tests/runtime/snapshots/test_overlay.py``. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from flex.errors import AlreadyExists, FailedPrecondition, NotFound
from flex.runtime.base.mount import Mount
from flex.runtime.base.overlayfs import mount_overlay
from flex.runtime.snapshots.base import Cleaner, DirectorySnapshotter, Kind

__all__ = ["CHECKS", "Check", "Unsupported", "check_active_overlay_mounts_for_real", "check_chain_lowers_and_mounts",
           "check_cleanup_keeps_live_snapshots", "check_errors", "check_labels_merge", "check_prepare_commit_stat",
           "check_remove_children_first"]

Check = Callable[[DirectorySnapshotter, Path], None]


class Unsupported(Exception):
    """This host cannot run the check (the reason is the message)."""


def _raises(kind: type[Exception], fn: Callable[[], object]) -> None:
    try:
        fn()
    except kind:
        return
    raise AssertionError(f"{fn} did not raise {kind.__name__}")


def _layer(s: DirectorySnapshotter, name: str, parent: str | None, files: dict[str, str]) -> None:
    key = f"extract-{name}"
    s.prepare(key, parent)
    for rel, text in files.items():
        path = s.dir(key) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    s.commit(name, key)


def check_prepare_commit_stat(s: DirectorySnapshotter, tmp: Path) -> None:
    (m,) = s.prepare("extract-a", labels={"from": "prepare"})
    assert m.type == "bind" and m.source == str(s.dir("extract-a")) and m.option("rw") == "", m
    assert s.stat("extract-a").kind is Kind.ACTIVE
    (s.dir("extract-a") / "file").write_text("a")
    s.commit("a", "extract-a", labels={"from": "commit"})
    info = s.stat("a")
    assert info.kind is Kind.COMMITTED and info.parent is None and info.key == "a"
    assert info.labels == {"from": "commit"}, "commit labels win over prepare labels"
    assert info.ownership == s.ownership
    _raises(NotFound, lambda: s.stat("extract-a"))  # commit renames the active snapshot
    assert [i.key for i in s.walk()] == ["a"]
    assert (s.dir("a") / "file").read_text() == "a"
    usage = s.usage("a")
    assert usage.inodes >= 1 and usage.size > 0, usage


def check_labels_merge(s: DirectorySnapshotter, tmp: Path) -> None:
    s.prepare("extract-a", labels={"keep": "1", "over": "prepare"})
    s.commit("a", "extract-a", labels={"over": "commit"})
    assert s.stat("a").labels == {"keep": "1", "over": "commit"}


def check_errors(s: DirectorySnapshotter, tmp: Path) -> None:
    _raises(NotFound, lambda: s.stat("missing"))
    _raises(NotFound, lambda: s.remove("missing"))
    _raises(NotFound, lambda: s.usage("missing"))
    _raises(NotFound, lambda: s.prepare("x", "missing-parent"))
    _raises(NotFound, lambda: s.commit("y", "missing"))
    s.prepare("active")
    _raises(AlreadyExists, lambda: s.prepare("active"))
    _raises(FailedPrecondition, lambda: s.prepare("child-of-active", "active"))
    _layer(s, "a", None, {"f": "a"})
    _raises(FailedPrecondition, lambda: s.commit("a2", "a"))  # committed once only
    _raises(AlreadyExists, lambda: s.commit("a", "active"))
    assert s.stat("active").kind is Kind.ACTIVE, "a refused commit leaves the active snapshot as it was"
    assert {i.key for i in s.walk()} == {"active", "a"}, "failed calls leave no snapshot behind"


def check_chain_lowers_and_mounts(s: DirectorySnapshotter, tmp: Path) -> None:
    _layer(s, "a", None, {"f": "a"})
    _layer(s, "b", "a", {"g": "b"})
    assert s.stat("b").parent == "a"
    assert s.lowers("b") == [s.dir("b"), s.dir("a")], "top first"
    assert s.lowers("a") == [s.dir("a")]
    (m,) = s.prepare("ctr", "b")
    assert m.type == "overlay"
    assert m.option("lowerdir") == f"{s.dir('b')}:{s.dir('a')}"
    assert m.option("upperdir") == str(s.dir("ctr")) and m.option("workdir")
    assert (m.option("userxattr") is not None) == (s.ownership != "unshifted"), "userxattr iff shifted"


def check_remove_children_first(s: DirectorySnapshotter, tmp: Path) -> None:
    _layer(s, "a", None, {"f": "a"})
    _layer(s, "b", "a", {"g": "b"})
    s.prepare("ctr", "b")
    _raises(FailedPrecondition, lambda: s.remove("a"))
    _raises(FailedPrecondition, lambda: s.remove("b"))
    gone = [s.dir(k) for k in ("ctr", "b", "a")]
    for key in ("ctr", "b", "a"):
        s.remove(key)
    assert list(s.walk()) == []
    assert not any(p.exists() for p in gone), "remove deletes the snapshot's directory"


def check_cleanup_keeps_live_snapshots(s: DirectorySnapshotter, tmp: Path) -> None:
    if not isinstance(s, Cleaner):
        raise Unsupported("not a Cleaner")
    _layer(s, "a", None, {"f": "a"})
    s.prepare("ctr", "a")
    assert s.cleanup() == 0
    assert (s.dir("a") / "f").read_text() == "a" and s.dir("ctr").is_dir()


@contextlib.contextmanager
def _mounted(m: Mount, target: Path) -> Iterator[Path]:
    lowers = [Path(p) for p in (m.option("lowerdir") or "").split(":")]
    extra = tuple(o for o in m.options if o.partition("=")[0] not in ("lowerdir", "upperdir", "workdir"))
    upper, work = m.option("upperdir"), m.option("workdir")
    target.mkdir(parents=True, exist_ok=True)
    mount_overlay(target, lowers, upper=Path(upper) if upper else None, work=Path(work) if work else None,
                  options=extra)
    try:
        yield target
    finally:
        ctypes.CDLL(None, use_errno=True).umount2(os.fsencode(target), 2)


def check_active_overlay_mounts_for_real(s: DirectorySnapshotter, tmp: Path) -> None:
    if s.ownership != "unshifted":
        raise Unsupported("a shifted snapshotter's overlays are mounted inside a user namespace")
    if os.geteuid() != 0:
        raise Unsupported("mounting an overlay outside a user namespace needs root")
    _layer(s, "a", None, {"f": "a", "d/x": "a"})
    _layer(s, "b", "a", {"d/x": "b"})
    (m,) = s.prepare("ctr", "b")
    with _mounted(m, tmp / "mnt") as root:
        assert (root / "f").read_text() == "a" and (root / "d/x").read_text() == "b", "upper layers win"
        (root / "new").write_text("ctr")
    assert (s.dir("ctr") / "new").read_text() == "ctr", "writes land in the active snapshot"
    assert not (s.dir("b") / "new").exists() and not (s.dir("a") / "new").exists()


CHECKS: list[Check] = [check_prepare_commit_stat, check_labels_merge, check_errors, check_chain_lowers_and_mounts,
                       check_remove_children_first, check_cleanup_keeps_live_snapshots,
                       check_active_overlay_mounts_for_real]
