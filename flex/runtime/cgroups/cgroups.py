"""Container cgroups: where they live, their limits (cpu, memory, pids), counters, delegation, removal.

Works on cgroup v2 (laptops) and v1/hybrid (these VMs: one hierarchy per controller under /sys/fs/cgroup).
The OCI runtime creates a container's cgroup from ``linux.cgroupsPath`` (``/flex/<id>``, or under a
parent delegated to a rootless user); flex only reads counters, chowns the directories to the
container's root for nested Docker (between ``crun create`` and ``crun start``), and removes leftovers.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.errors import InvalidArgument

__all__ = ["Limits", "cgroup_dirs", "delegate", "delegate_to_user", "ensure_parent", "is_v2", "parse_cpus",
           "parse_memory", "read_counter", "remove", "rootless_parent"]

ROOT = Path("/sys/fs/cgroup")
PERIOD = 100_000


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


@dataclass
class Limits:
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None

    def to_oci(self) -> dict[str, Any]:
        res: dict[str, Any] = {}
        if self.cpus is not None:
            res["cpu"] = {"quota": int(self.cpus * PERIOD), "period": PERIOD}
        if self.memory is not None:
            # swap = memory: a hog is OOM-killed instead of swapping
            res["memory"] = {"limit": self.memory, "swap": self.memory}
        if self.pids is not None:
            res["pids"] = {"limit": self.pids}
        return res

    def empty(self) -> bool:
        return self.cpus is None and self.memory is None and self.pids is None


def parse_cpus(value: str) -> float:
    try:
        cpus = float(value)
    except ValueError:
        raise InvalidArgument(f"--cpus {value!r}: not a number", hint="e.g. --cpus 1.5") from None
    if not 0.01 <= cpus <= 4096:
        raise InvalidArgument(f"--cpus {value!r}: must be between 0.01 and 4096")
    return cpus


def parse_memory(value: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", value.lower())
    if not m:
        raise InvalidArgument(f"--memory {value!r}: not a size", hint="e.g. --memory 512m or --memory 2g")
    n = float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    if n < 6 << 20:
        raise InvalidArgument(f"--memory {value!r}: at least 6m is needed")
    return int(n)


def cgroup_dirs(rel: str) -> list[Path]:
    """Every existing directory of the cgroup ``rel`` (one on v2, one per hierarchy on v1)."""
    rel = rel.strip("/")
    if is_v2():
        p = ROOT / rel
        return [p] if p.is_dir() else []
    out = []
    for h in sorted(ROOT.iterdir()):
        if h.is_symlink():
            continue
        p = h / rel
        if p.is_dir():
            out.append(p)
    return out


def read_counter(rel: str, v1_controller: str, v1_file: str, v2_file: str) -> str | None:
    base = ROOT / rel.strip("/") / v2_file if is_v2() else ROOT / v1_controller / rel.strip("/") / v1_file
    try:
        return base.read_text()
    except OSError:
        return None


def delegate(rel: str, uid: int, gid: int) -> None:
    """Let the container's root manage its own cgroup (nested Docker): chown the directories and the
    files a manager writes. On v1, cpuset.cpus/mems of the container's group must be set for the inner
    runtime's child groups to work; the OCI runtime copies them from the parent already."""
    files = ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads", "cgroup.clone_children")
    for d in cgroup_dirs(rel):
        os.chown(d, uid, gid)
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(d / f, uid, gid)


def remove(rel: str) -> None:
    """Remove the cgroup ``rel`` and any children (empty of processes by then); missing is fine."""
    for d in cgroup_dirs(rel):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def delegate_to_user(uid: int, gid: int) -> list[Path]:
    """As root, on cgroup v1: give ``uid`` a cgroup subtree ``/flex-user-<uid>`` in every hierarchy, so
    its rootless containers get limits and nested Docker (what systemd's Delegate=yes does on v2)."""
    if is_v2():
        raise InvalidArgument("on cgroup v2, delegate with systemd (Delegate=yes on the user's service)")
    made = []
    for h in sorted(ROOT.iterdir()):
        if h.is_symlink() or not h.is_dir():
            continue
        d = h / f"flex-user-{uid}"
        d.mkdir(exist_ok=True)
        for f in ("cpuset.cpus", "cpuset.mems"):
            if (d / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((h / f).read_text())
        delegate(str(d.relative_to(h)), uid, gid)
        made.append(d)
    return made


def ensure_parent(rel: str) -> None:
    """Create the parent cgroup ``rel`` in every v1 hierarchy with cpuset.cpus/mems filled in (an empty
    cpuset makes every child's cgroup.procs write fail with ENOSPC)."""
    if is_v2():
        return
    for h in sorted(ROOT.iterdir()):
        if h.is_symlink() or not h.is_dir():
            continue
        cur = h
        for part in rel.strip("/").split("/"):
            parent, cur = cur, cur / part
            with contextlib.suppress(FileExistsError):
                cur.mkdir()
            for f in ("cpuset.cpus", "cpuset.mems"):
                with contextlib.suppress(OSError):
                    if (cur / f).exists() and not (cur / f).read_text().strip():
                        (cur / f).write_text((parent / f).read_text())


def rootless_parent(uid: int) -> str | None:
    """A cgroup parent root delegated to ``uid`` (v1: ``/flex-user-<uid>`` owned by the user in every
    hierarchy, made by root or the installer), or None when nobody delegated one."""
    if is_v2():
        try:
            own = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        except (OSError, IndexError):
            return None
        p = ROOT / own.strip("/")
        if os.access(p, os.W_OK) and os.access(p / "cgroup.procs", os.W_OK):
            return own
        return None
    rel = f"flex-user-{uid}"
    dirs = [h / rel for h in ROOT.iterdir() if not h.is_symlink() and h.is_dir()]
    if dirs and all(d.is_dir() and d.stat().st_uid == uid for d in dirs):
        return "/" + rel
    return None
