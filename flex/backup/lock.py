"""Repository locks: many backups at once (shared), or one prune alone (exclusive), with stale-lock detection.

A lock is an object ``locks/<random>`` holding host, pid, time and kind, sealed like every object. Taking
a lock writes ours first and then reads the others, so two writers racing both see each other and back
off. A lock is stale when it is older than ``STALE_AFTER`` without a refresh, or when it was taken on
this host by a process that no longer exists (a kill -9): stale locks are removed by whoever finds them.
A taker may wait for a lock (as restic's ``--retry-lock``): a backup behind another environment's prune, or a
prune behind a backup, is late, not failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flex.errors import Conflict, FlexError
from flex.pids import pid_alive

if TYPE_CHECKING:
    from flex.backup.repository import Repository

__all__ = ["STALE_AFTER", "Lock", "lock"]

STALE_AFTER = 30 * 60.0
REFRESH_AFTER = 5 * 60.0


class Lock:
    def __init__(self, repo: Repository, exclusive: bool):
        self.repo = repo
        self.exclusive = exclusive
        self.name = ""
        self.taken = 0.0

    def _write(self) -> None:
        name = f"locks/{secrets.token_hex(16)}"
        body = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "exclusive": self.exclusive}
        self.repo.store.put(name, self.repo.key.seal(json.dumps(body).encode(), b"lock"))
        old, self.name, self.taken = self.name, name, time.monotonic()
        if old:
            self.repo.store.delete(old)

    def acquire(self) -> None:
        self._write()
        for name in list(self.repo.store.list("locks/")):
            if name == self.name:
                continue
            try:
                other = json.loads(self.repo.key.open(self.repo.store.get(name), b"lock", name))
            except FlexError:
                continue  # vanished meanwhile, or not ours to read: ignore, like restic
            if _stale(other):
                self.repo.store.delete(name)
                continue
            if self.exclusive or other.get("exclusive"):
                self.release()
                kind = "an exclusive" if other.get("exclusive") else "a"
                raise Conflict(f"{self.repo.store.location} is locked: {kind} lock held by pid {other.get('pid')} "
                               f"on {other.get('host')}", hint="wait for that backup or prune to finish and retry")

    def refresh(self) -> None:
        """Called at safe points of long runs so others do not take us for stale."""
        if self.name and time.monotonic() - self.taken > REFRESH_AFTER:
            self._write()

    def release(self) -> None:
        if self.name:
            self.repo.store.delete(self.name)
            self.name = ""


def _stale(other: dict[str, object]) -> bool:
    t = other.get("time")
    if not isinstance(t, int | float) or time.time() - t > STALE_AFTER:
        return True
    pid = other.get("pid")
    return other.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)


@contextlib.contextmanager
def lock(repo: Repository, *, exclusive: bool = False, wait: float = 0.0) -> Iterator[Lock]:
    """Hold the repository's lock; ``wait``: seconds to keep trying while another holder's lock is in the way
    (Conflict after that)."""
    lk = Lock(repo, exclusive)
    deadline, delay = time.monotonic() + wait, 0.1
    while True:
        try:
            lk.acquire()
            break
        except Conflict:
            if time.monotonic() + delay > deadline:
                raise
            # jittered: two takers that saw each other and backed off do not meet again at the same instant
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)
    repo.current_lock = lk
    try:
        yield lk
    finally:
        repo.current_lock = None
        lk.release()
