"""Pack files: many sealed blobs in one object, so object storage holds few large objects.

Layout (docs/backup.md): ``blob_0 || … || blob_n || sealed header || u32 LE header length``. Each blob is
sealed on its own with associated data ``type || id``; the header lists ``type(1) id(32) length(u32)
raw_length(u32)`` per blob, in order, so offsets follow from lengths. A pack is named by the SHA-256 of
its bytes, so damage is visible without the key. A blob's plaintext is one flag byte (0 raw, 1 zstd)
and the payload; ``raw_length`` is the payload's size before compression.

A pack is written to a spool file (``Store.spool``) blob by blob, and a large blob is encrypted in
``STEP`` pieces straight into it, so memory holds a piece of one blob, never a pack (issue 17).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

from flex.backup.crypto import MasterKey, SealError
from flex.backup.stores.base import Spool

__all__ = ["BLOB_DATA", "BLOB_TREE", "PackEntry", "PackWriter", "open_blob", "pack_name", "read_header", "seal_blob",
           "seal_parts"]

BLOB_DATA = 0
BLOB_TREE = 1
_ENTRY = struct.Struct("<B32sII")
_LEVEL = 3
STEP = 1 << 20  # a blob larger than this is encrypted piece by piece
_cctx = zstandard.ZstdCompressor(level=_LEVEL)
_dctx = zstandard.ZstdDecompressor()


@dataclass(frozen=True, slots=True)
class PackEntry:
    type: int
    id: bytes
    offset: int
    length: int
    raw_length: int


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def _aad(btype: int, bid: bytes) -> bytes:
    return bytes([btype]) + bid


def seal_parts(key: MasterKey, btype: int, bid: bytes, data: bytes | memoryview) -> Iterator[bytes]:
    """The sealed blob in pieces (their concatenation is the blob as stored)."""
    packed = _cctx.compress(data) if len(data) > 64 else b""
    if packed and len(packed) < len(data):
        flag, body = b"\x01", memoryview(packed)
    else:
        flag, body = b"\x00", memoryview(data).cast("B")
    if len(body) <= STEP:
        yield key.seal(flag + body, _aad(btype, bid))
    else:
        yield from key.seal_stream(flag, body, _aad(btype, bid), STEP)


def seal_blob(key: MasterKey, btype: int, bid: bytes, data: bytes | memoryview) -> bytes:
    return b"".join(seal_parts(key, btype, bid, data))


def open_blob(key: MasterKey, btype: int, bid: bytes, sealed: bytes, raw_length: int) -> bytes:
    """The blob's content, or SealError if it does not authenticate or its hash is not its id."""
    what = f"blob {bid.hex()[:16]}"
    body = key.open(sealed, _aad(btype, bid), what)
    try:
        data = _dctx.decompress(body[1:], max_output_size=raw_length) if body[:1] == b"\x01" else body[1:]
    except zstandard.ZstdError:
        raise SealError(f"{what} does not decompress") from None
    if len(data) != raw_length or key.blob_id(data) != bid:
        raise SealError(f"{what} does not match its id", hint="run `flex backup verify --read-data`")
    return data


class PackWriter:
    """One pack being written into ``spool``; ``finish`` adds the header and names it."""

    def __init__(self, key: MasterKey, spool: Spool):
        self.key = key
        self.spool = spool
        self.entries: list[PackEntry] = []
        self.size = 0
        self._hash = hashlib.sha256()

    def _write(self, part: bytes) -> int:
        self._hash.update(part)
        self.spool.write(part)
        return len(part)

    def add(self, btype: int, bid: bytes, data: bytes | memoryview) -> None:
        n = sum(self._write(part) for part in seal_parts(self.key, btype, bid, data))
        self.entries.append(PackEntry(btype, bid, self.size, n, len(data)))
        self.size += n

    def add_sealed(self, entry: PackEntry, sealed: bytes) -> None:
        """Copy a blob from another pack as it is (prune's repack: no re-encryption)."""
        self.entries.append(PackEntry(entry.type, entry.id, self.size, len(sealed), entry.raw_length))
        self.size += self._write(sealed)

    def finish(self) -> tuple[str, list[PackEntry]]:
        """The pack's id and entries; its bytes are in the spool, for ``Store.put_spool``."""
        header = b"".join(_ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in self.entries)
        sealed = self.key.seal(header, b"pack-header")
        self._write(sealed)
        self._write(struct.pack("<I", len(sealed)))
        return self._hash.hexdigest(), self.entries


def read_header(key: MasterKey, pack: bytes, what: str) -> list[PackEntry]:
    if len(pack) < 4:
        raise SealError(f"{what} is truncated")
    (hlen,) = struct.unpack("<I", pack[-4:])
    if hlen + 4 > len(pack):
        raise SealError(f"{what} has a bad header length")
    header = key.open(pack[-4 - hlen:-4], b"pack-header", f"{what}'s header")
    out, offset = [], 0
    for i in range(0, len(header) - len(header) % _ENTRY.size, _ENTRY.size):
        t, bid, length, raw = _ENTRY.unpack_from(header, i)
        out.append(PackEntry(t, bid, offset, length, raw))
        offset += length
    return out
