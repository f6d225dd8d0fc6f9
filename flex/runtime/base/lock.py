"""Advisory file locks (flock) between processes and threads: shared for many, exclusive for one.

Each acquisition opens the lock file anew, so two threads of one process exclude each other as two
processes do (flock belongs to the open file description). A process forked while it holds one (the
userns keeper, the rootless outer netns helper) must not keep holding it for its whole life: forked
children close every lock fd this module holds. Exec'd children never see them (O_CLOEXEC).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["file_lock"]

_held: set[int] = set()
_guard = threading.Lock()


def _close_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _guard.release()


# the guard is held across fork, so a lock fd is never opened or closed while a child copies the table
os.register_at_fork(before=_guard.acquire, after_in_parent=_guard.release, after_in_child=_close_in_child)


@contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold ``path`` (created 0600 if missing) locked until the block ends; waits for conflicting holders."""
    with _guard:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _held.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        with _guard:
            _held.discard(fd)
            os.close(fd)
