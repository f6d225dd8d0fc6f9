"""What this machine offers, as the runner reports it in heartbeats: CPUs it may use, its memory, and the
size of the filesystem holding FLEX_HOME (where volumes and images live)."""

from __future__ import annotations

import os
from pathlib import Path

from flex.api import RunnerCapacity

__all__ = ["id_ranges", "machine_capacity"]


def _memory() -> int:
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    # a memory limit on our own cgroup (a VM's runner in a container, a systemd slice) caps what we offer
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def machine_capacity(home: Path) -> RunnerCapacity:
    st = os.statvfs(home)
    return RunnerCapacity(cpus=float(len(os.sched_getaffinity(0))), memory=_memory(),
                          disk=st.f_blocks * st.f_frsize)


def id_ranges() -> tuple[bool, int]:
    """(rootless, separate id ranges it can give environments), for the scheduler: as root, the pool of
    65536-id ranges; rootless, every container shares the user's one subordinate range, so none apart."""
    if os.geteuid() != 0:
        return True, 0
    from flex.runtime.userns.idmap import RANGE_SIZE
    from flex.runtime.userns.idpool import POOL_END, POOL_START

    return False, (POOL_END - POOL_START) // RANGE_SIZE
