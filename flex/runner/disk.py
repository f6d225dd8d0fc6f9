"""Disk: what an environment uses against ``spec.resources.disk``, and whether the machine is low on free disk.

An environment's usage is measured here, on every runner: the blocks of its workspace volume, its other
volumes (``/var/lib/docker`` included) and its container's writable layer, each inode counted once, as ``du``
counts them. A root runner also caps the volumes with a disk image (disk_image.py: ENOSPC); this soft limit
then covers the writable layer and a limit lowered below the image's size. Measuring works the same rootless
and as root on any filesystem (these machines' ext4 has no project quotas, and a rootless runner can make
neither loop devices nor quotas), and leaves nothing behind to leak on a kill -9. Over it the environment
shows ``DiskPressure=True`` and is not started again, while a running container keeps running so its user
can delete files (a quota's grace, not an ENOSPC in the middle of a build).

A rootless runner cannot read directories a container's other users made private (mode 0700 under a
subordinate id); those are left out of the count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DEFAULT_MIN_FREE", "disk_free", "disk_usage", "human_bytes"]

# below this much free space on FLEX_HOME's filesystem the runner reports DiskPressure (kubelet's default
# hard eviction threshold for nodefs is 10 %; a laptop's disk is smaller, so an absolute figure)
DEFAULT_MIN_FREE = 2 * 2**30


def disk_usage(roots: Iterable[Path]) -> int:
    """Bytes allocated to the files under ``roots`` (hard links and roots inside roots counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def count(st: os.stat_result) -> None:
        nonlocal total
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512

    stack = []
    for root in roots:
        try:
            count(os.lstat(root))
        except OSError:
            continue
        stack.append(str(root))
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    count(st)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue  # gone meanwhile, or private to one of the container's other users (rootless)
    return total


def disk_free(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
