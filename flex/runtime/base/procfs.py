"""/proc/<pid>/stat, read the one safe way: the command name may hold spaces and parentheses, so the
fields are what follows the last ')'. Field numbers below are proc(5)'s minus 3 (pid and comm gone).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProcStat", "proc_stat"]


@dataclass(frozen=True)
class ProcStat:
    state: str       # R, S, D, Z, ...
    ppid: int
    start_time: str  # clock ticks since boot: with the pid, names one process across pid reuse

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def proc_stat(pid: int) -> ProcStat | None:
    """The process's state, parent and start time; None when it is gone (or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return ProcStat(state=fields[0], ppid=int(fields[1]), start_time=fields[19])
    except (OSError, IndexError, ValueError):
        return None
