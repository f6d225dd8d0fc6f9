"""A blob that can be read while it is still being downloaded, so a layer unpacks as it arrives.

The downloader writes into the content store's temp file and reports progress here; a reader blocks
until more bytes are written, and sees EOF only after the writer verified size and digest and
committed the blob — if verification fails the reader gets the error instead, so a snapshot made from
a spool is never committed from bytes that did not check out. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import BinaryIO

__all__ = ["Spool"]


class Spool:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.path: Path | None = None
        self.written = 0
        self.done = False
        self.error: BaseException | None = None

    # writer side ---------------------------------------------------------------------------------
    def opened(self, path: Path) -> None:
        with self._cond:
            self.path = path
            self._cond.notify_all()

    def wrote(self, n: int) -> None:
        with self._cond:
            self.written += n
            self._cond.notify_all()

    def finished(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.done = True
            self.error = error
            self._cond.notify_all()

    # reader side ---------------------------------------------------------------------------------
    def open(self, final: Path) -> BinaryIO:
        """A buffered reader of the blob; ``final`` is where it lives once committed (used if the blob
        was already in the store and nothing is being written)."""
        with self._cond:
            while self.path is None and not self.done:
                self._cond.wait()
            if self.error is not None:
                raise self.error
            path = self.path
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass  # already committed (renamed into place) or aborted: wait for the outcome
            else:
                return io.BufferedReader(_GrowingRaw(self, fd), 1 << 20)
        with self._cond:
            while not self.done:
                self._cond.wait()
            if self.error is not None:
                raise self.error
        return open(final, "rb", buffering=1 << 20)


class _GrowingRaw(io.RawIOBase):
    def __init__(self, spool: Spool, fd: int):
        self._spool = spool
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        spool = self._spool
        with spool._cond:
            while spool.written <= self._pos and not spool.done:
                spool._cond.wait()
            if spool.written <= self._pos:
                if spool.error is not None:
                    raise spool.error
                return 0
            avail = spool.written - self._pos
        data = os.pread(self._fd, min(len(buf), avail), self._pos)
        buf[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
