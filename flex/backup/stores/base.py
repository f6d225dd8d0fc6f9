"""The Store Protocol: where a repository's objects live. Imports nothing from flex but flex.errors.

Objects are named by paths such as ``data/ab/ab12…``, ``index/…``, ``snapshots/…``, ``keys/…``,
``locks/…`` and ``config``. Every name but a lock's is derived from its content, so an object is written
once and never rewritten: ``put`` of an existing name leaves it as it is.

    store.put("index/9f…", sealed)       # whole object, or nothing, appears
    store.get("data/ab/ab…", 1024, 512)  # a byte range
    for name in store.list("snapshots/"): ...

A large object (a pack) is built in a spool file rather than in memory, and stored when it is whole:

    spool = store.spool()                # an unnamed temp file where possible: a crash leaves nothing
    spool.write(part, part, ...)
    store.put_spool("data/ab/ab…", spool)  # stores it and closes the spool (``spool.close()`` drops it)
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Spool", "Store", "temp_fd"]


class Spool:
    """A write-only temp file; ``path`` is None when it has no name (O_TMPFILE)."""

    def __init__(self, fd: int, path: str | None = None):
        self.fd, self.path, self.size = fd, path, 0

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            n = os.writev(self.fd, views)
            self.size += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]

    def close(self) -> None:
        """Drop the spool (after ``put_spool``, or instead of it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def temp_fd(directory: str) -> tuple[int, str | None]:
    """An unnamed file in ``directory`` (O_TMPFILE: nothing is left after a kill -9), or a named
    ``.tmp-*`` one where the file system has no O_TMPFILE."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600), None
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # EISDIR: old kernels
                raise
    return tempfile.mkstemp(dir=directory, prefix=".tmp-")


class Store(Protocol):
    location: str

    def put(self, name: str, data: bytes) -> None: ...
    def spool(self) -> Spool: ...
    def put_spool(self, name: str, spool: Spool) -> None: ...
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete(self, name: str) -> None: ...
