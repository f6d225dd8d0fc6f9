"""Content-defined chunks of a file region, read into one buffer the archiver keeps. Imports nothing from flex.

The cuts are FastCDC's (pyfastcdc ``cut_stream``, docs/backup.md), so repositories written before keep
deduplicating. What differs is memory (issue 17): ``cut_stream`` allocates (and zero-fills) a buffer of
twice the maximum chunk size for every file; this reads into one buffer of ``max_size`` kept for the
whole backup. That is enough: a cut found before the end of the data at hand is the cut more data would
give (FastCDC tests the same positions with the same rolling hash and stops at the first hit), and
``max_size`` bytes always decide the cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from pyfastcdc import FastCDC

__all__ = ["Chunker"]


class Chunker:
    def __init__(self, avg_size: int, min_size: int, max_size: int, seed: int):
        self.cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)
        self.max_size = max_size
        self.buf = bytearray()

    def chunks(self, fd: int, offset: int, length: int) -> Iterator[memoryview]:
        """The chunks of ``length`` bytes at ``offset``; each view is valid until the next is asked for.
        A file that shrinks while it is read ends early (the caller notices from its times)."""
        if len(self.buf) < min(length, self.max_size):
            self.buf = bytearray(min(length, self.max_size))
        view = memoryview(self.buf)
        start = end = 0  # the data at hand is view[start:end]
        left = length  # bytes of the region not read yet
        while True:
            if left and (end - start < self.max_size):
                if end == len(view):  # make room: keep what is not cut yet at the front
                    view[:end - start] = view[start:end]
                    start, end = 0, end - start
                got = os.preadv(fd, [view[end:end + left]], offset)
                offset, end = offset + got, end + got
                left = left - got if got else 0
            if start == end:
                return
            n = next(self.cdc.cut_buf(view[start:end])).length
            if start + n == end and left and end - start < self.max_size:
                continue  # no cut in the data at hand: read more before deciding
            yield view[start:start + n]
            start += n
