"""flex.pids.pid_alive: what pid files (the daemon, backup locks, container monitors) are checked with."""

from __future__ import annotations

import os
import subprocess
import time

from flex.pids import pid_alive


def test_running_exited_zombie_and_none() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(None) and not pid_alive(0)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(proc.pid)
        proc.kill()
        deadline = time.monotonic() + 10  # killed, not yet reaped: a zombie, which has exited
        while pid_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()
    assert not pid_alive(proc.pid)  # reaped: gone
    assert pid_alive(1)  # another user's process (or init's): kill(0) may say EPERM, and it runs
