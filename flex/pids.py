"""Whether a process runs: shared by every layer, like flex.errors (pid files of the daemon, backup locks,
containers' monitors)."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs. A zombie counts as dead: it has exited, and its exit status is being collected.
    A process of another user (EPERM) runs."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]  # the name before ")" may hold spaces and ")"
    except OSError:
        return True  # no /proc entry to read (a race with its exit, or no procfs): kill(0) said it runs
    return state != [b"Z"]
