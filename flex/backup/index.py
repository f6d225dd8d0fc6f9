"""The in-memory index: which pack holds each blob, and where in it. Imports nothing from flex but flex.errors.

Every backup and restore holds the whole index of its repository (one entry per blob: ~50k for a
1.6 GiB tree), so its size is part of every run's peak memory (issue 17). An entry is a 21-byte record
(pack number, type, offset, length, raw length) under the blob's 32-byte id, and pack ids are kept once:
about 170 bytes an entry where an ``IndexEntry`` object took 300. Reading one gives an ``IndexEntry``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Index", "IndexEntry"]

_REC = struct.Struct("<IBQII")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


class Index(Mapping[bytes, IndexEntry]):
    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._packs: list[str] = []
        self._numbers: dict[str, int] = {}

    def add(self, bid: bytes, pack: str, btype: int, offset: int, length: int, raw_length: int, *,
            replace: bool = True) -> None:
        """Record where ``bid`` is; with ``replace=False`` a blob already known keeps its place.
        Raises struct.error for numbers no pack can hold."""
        if not replace and bid in self._blobs:
            return
        no = self._numbers.get(pack)
        if no is None:
            no = self._numbers[pack] = len(self._packs)
            self._packs.append(pack)
        self._blobs[bid] = _REC.pack(no, btype, offset, length, raw_length)

    def clear(self) -> None:
        self._blobs.clear()
        self._packs.clear()
        self._numbers.clear()

    def __getitem__(self, bid: bytes) -> IndexEntry:
        no, btype, offset, length, raw = _REC.unpack(self._blobs[bid])
        return IndexEntry(self._packs[no], btype, offset, length, raw)

    def __contains__(self, bid: object) -> bool:
        return bid in self._blobs

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)
