"""Pack files: many sealed blobs in one object, so object storage holds few large objects.

Layout (docs/backup.md): ``blob_0 || … || blob_n || sealed header || u32 LE header length``. Each blob is
sealed on its own with associated data ``type || id``; the header lists ``type(1) id(32) length(u32)
raw_length(u32)`` per blob, in order, so offsets follow from lengths. A pack is named by the SHA-256 of
its bytes, so damage is visible without the key. A blob's plaintext is one flag byte (0 raw, 1 zstd)
and the payload; ``raw_length`` is the payload's size before compression.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import zstandard

from flex.backup.crypto import MasterKey, SealError

__all__ = ["BLOB_DATA", "BLOB_TREE", "PackEntry", "PackWriter", "open_blob", "pack_name", "read_header", "seal_blob"]

BLOB_DATA = 0
BLOB_TREE = 1
_ENTRY = struct.Struct("<B32sII")
_LEVEL = 3
_cctx = zstandard.ZstdCompressor(level=_LEVEL)
_dctx = zstandard.ZstdDecompressor()


@dataclass(frozen=True)
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


def seal_blob(key: MasterKey, btype: int, bid: bytes, data: bytes | memoryview) -> bytes:
    packed = _cctx.compress(data) if len(data) > 64 else b""
    body = b"\x01" + packed if packed and len(packed) < len(data) else b"\x00" + bytes(data)
    return key.seal(body, _aad(btype, bid))


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
    def __init__(self, key: MasterKey):
        self.key = key
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, btype: int, bid: bytes, data: bytes | memoryview) -> None:
        sealed = seal_blob(self.key, btype, bid, data)
        self.entries.append(PackEntry(btype, bid, self.size, len(sealed), len(data)))
        self.parts.append(sealed)
        self.size += len(sealed)

    def add_sealed(self, entry: PackEntry, sealed: bytes) -> None:
        """Copy a blob from another pack as it is (prune's repack: no re-encryption)."""
        self.entries.append(PackEntry(entry.type, entry.id, self.size, len(sealed), entry.raw_length))
        self.parts.append(sealed)
        self.size += len(sealed)

    def finish(self) -> tuple[str, bytes, list[PackEntry]]:
        header = b"".join(_ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in self.entries)
        sealed = self.key.seal(header, b"pack-header")
        data = b"".join([*self.parts, sealed, struct.pack("<I", len(sealed))])
        return hashlib.sha256(data).hexdigest(), data, self.entries


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
