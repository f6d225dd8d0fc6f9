"""Layers → committed snapshots, one per chain id, so identical layers are shared between images.

For each layer: decompress (gzip, zstd or none: sniffed from the bytes, whatever the media type says),
hash the uncompressed stream to check it against the config's diff_id, stop at a size limit
(decompression bombs; FLEX_MAX_LAYER_SIZE bytes, default 64 GiB), and apply it with tarsafe into a
fresh ``extract-…`` snapshot that is committed as ``sha256:<chain id>`` only when everything checked
out and the snapshot's filesystem was synced (syncfs(2), what containerd's applier does with
``image_pull_with_sync_fs``, containerd#9401/#5854; always here: a committed snapshot is trusted by every
later pull, so a power loss must not leave it with empty or truncated files).
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flex.errors import AlreadyExists, InvalidArgument
from flex.runtime.base.syncfs import syncfs
from flex.runtime.content.store import DigestMismatch
from flex.runtime.diff.tarsafe import LayerStats, apply_tar
from flex.runtime.images.store import chain_ids
from flex.runtime.snapshots.base import DirectorySnapshotter

__all__ = ["DEFAULT_MAX_LAYER_SIZE", "Applier", "LayerTooLarge", "UnpackResult", "apply_layer_file",
           "apply_layer_stream", "chain_ids", "max_layer_size", "open_uncompressed", "unpack_layer"]

DEFAULT_MAX_LAYER_SIZE = 64 << 30
_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"


class LayerTooLarge(InvalidArgument):
    """A layer decompresses to more than the configured limit."""


def max_layer_size() -> int:
    value = os.environ.get("FLEX_MAX_LAYER_SIZE", "")
    try:
        return int(value) if value else DEFAULT_MAX_LAYER_SIZE
    except ValueError as err:
        raise InvalidArgument(f"FLEX_MAX_LAYER_SIZE={value!r} is not a number of bytes") from err



class _Uncompressed:
    """Reads the uncompressed stream, hashing it and refusing to go past ``limit`` bytes."""

    def __init__(self, inner: BinaryIO, limit: int, *, owned: bool = False):
        self._inner = inner
        self._owned = owned  # a decompressor made here (closed here); never the caller's blob
        self._limit = limit
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n if n is not None and n >= 0 else 1 << 20)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerTooLarge(f"layer decompresses to more than {self._limit} bytes; refused",
                                hint="raise FLEX_MAX_LAYER_SIZE if the image is legitimate")
        self._hash.update(data)
        return data

    def close(self) -> None:
        if self._owned:
            self._inner.close()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _Prefetch:
    """Decompresses and hashes in a thread (zlib, zstd and hashlib release the GIL), so a second core
    works while this one parses tar headers and makes files."""

    def __init__(self, inner: _Uncompressed, chunk: int = 1 << 20, depth: int = 8):
        self._inner = inner
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(chunk,), daemon=True, name="flex-unpack-read")
        self._thread.start()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunk: int) -> None:
        try:
            while True:
                data = self._inner.read(chunk)
                if not self._put(data) or not data:
                    return
        except BaseException as err:
            self._put(err)

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            if self._eof:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
                return b""
            self._buf, self._pos = item, 0
        if n is None or n < 0:
            n = len(self._buf) - self._pos
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._inner.close()

    @property
    def digest(self) -> str:
        return self._inner.digest


def open_uncompressed(blob: BinaryIO, limit: int) -> _Uncompressed:
    head = blob.peek(4)[:4] if hasattr(blob, "peek") else b""
    inner: BinaryIO
    if head.startswith(_MAGIC_GZIP):
        gzip_impl: Any = gzip
        try:  # ISA-L inflates 2-3x faster than zlib: most of a pull's CPU is here
            from isal import igzip

            gzip_impl = igzip
        except ImportError:
            pass
        inner = gzip_impl.GzipFile(fileobj=blob, mode="rb")
    elif head.startswith(_MAGIC_ZSTD):
        import zstandard

        inner = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
    else:
        return _Uncompressed(blob, limit)
    return _Uncompressed(inner, limit, owned=True)


def apply_layer_file(dest: Path, blob_path: Path, lowers: Sequence[Path], *, userns: bool = False,
                     limit: int | None = None) -> tuple[str, LayerStats]:
    """Apply the layer blob at ``blob_path`` to ``dest``; returns (diff_id, stats)."""
    with open(blob_path, "rb", buffering=1 << 20) as f:
        return apply_layer_stream(dest, f, lowers, name=blob_path.name, userns=userns, limit=limit)


def apply_layer_stream(dest: Path, blob: BinaryIO, lowers: Sequence[Path], *, name: str, userns: bool = False,
                       limit: int | None = None) -> tuple[str, LayerStats]:
    """Apply a (compressed or not) layer read from ``blob``, which must support ``peek``."""
    stream = _Prefetch(open_uncompressed(blob, max_layer_size() if limit is None else limit))
    try:
        stats = apply_tar(dest, stream, lowers=lowers, userns=userns)  # type: ignore[arg-type]
    except (EOFError, OSError, gzip.BadGzipFile) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise InvalidArgument(f"layer {name} is corrupt: {err}") from err
    finally:
        stream.close()
    return stream.digest, stats


Applier = Callable[[Path, Path, Sequence[Path]], tuple[str, LayerStats]]


@dataclass
class UnpackResult:
    chain_id: str
    unpacked: bool  # False if the snapshot already existed
    stats: LayerStats | None = None


def unpack_layer(snapshots: DirectorySnapshotter, blob_path: Path, diff_id: str, parent: str | None,
                 *, applier: Applier | None = None, on_key: Callable[[str], None] | None = None) -> UnpackResult:
    """Make the committed snapshot for this layer on top of ``parent`` (a chain id), unless it exists."""
    chain = diff_id if parent is None else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
    with contextlib.suppress(Exception):
        if snapshots.stat(chain).kind.value == "committed":
            return UnpackResult(chain, False)
    key = f"extract-{os.urandom(6).hex()}-{chain}"
    if on_key:
        on_key(key)  # leased before it exists: GC removes an extract-… snapshot that no lease holds
    snapshots.prepare(key, parent, labels={"flex.dev/diff-id": diff_id})
    try:
        lowers = snapshots.lowers(parent) if parent else []
        apply = applier or (lambda d, b, lw: apply_layer_file(d, b, lw))
        got, stats = apply(snapshots.dir(key), blob_path, lowers)
        if got != diff_id:
            raise DigestMismatch(f"layer {blob_path.name} uncompresses to {got}, but the image config says "
                                 f"{diff_id}", hint="the image is corrupt or was tampered with")
        syncfs(snapshots.dir(key))
        labels = {"flex.dev/whiteouts": stats.whiteout_form} if stats.whiteout_form else {}
        try:
            snapshots.commit(chain, key, labels=labels)
        except AlreadyExists:  # a concurrent pull committed the same layer first
            snapshots.remove(key)
            return UnpackResult(chain, False, stats)
        return UnpackResult(chain, True, stats)
    except BaseException:
        with contextlib.suppress(Exception):
            snapshots.remove(key)
        raise
