"""Layer tars a build makes, and where they go.

``TarWriter`` writes entries with numeric owners, empty user and group names, exact names and modes,
hard links kept; with SOURCE_DATE_EPOCH, mtimes are clamped to it, so the same inputs give the same
bytes (the caller sorts). ``LayerSink`` takes the tar as it is written and leaves its compressed blob
(zstd by default, gzip on request) in the content store's tmp dir with its digest and diff_id;
``store_layer`` does that for a tar file. A RUN step's upper dir is walked by ``upper.py``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flex.runtime.images.mediatypes import OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from flex.runtime.images.store import ImageStore
from flex.runtime.leases.leases import Lease

__all__ = ["LayerBlob", "LayerSink", "TarWriter", "source_date_epoch", "store_layer", "xattrs"]


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    media_type: str
    size: int
    diff_id: str


def xattrs(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


class TarWriter:
    """Writes layer entries with numeric owners, sorted by the caller, mtimes clamped to ``epoch``."""

    def __init__(self, out: BinaryIO, epoch: int | None) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by close())
        self.epoch = epoch
        self.links: dict[tuple[int, int], str] = {}

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: float) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode & 0o7777
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        mt = int(mtime)
        ti.mtime = min(mt, self.epoch) if self.epoch is not None else mt
        return ti

    def whiteout(self, name: str, mtime: float = 0) -> None:
        self.tar.addfile(self._info(name, tarfile.REGTYPE, 0, 0, 0, mtime if self.epoch is None else 0))

    def add_path(self, name: str, path: str, st: os.stat_result, uid: int, gid: int,
                 xattrs: dict[str, bytes] | None = None, mode: int | None = None) -> None:
        m = st.st_mode if mode is None else (st.st_mode & ~0o7777) | mode
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self.links:
                ti = self._info(name, tarfile.LNKTYPE, m, uid, gid, st.st_mtime)
                ti.linkname = self.links[key]
                self.tar.addfile(ti)
                return
            self.links[key] = name
        if stat.S_ISDIR(st.st_mode):
            ti = self._info(name, tarfile.DIRTYPE, m, uid, gid, st.st_mtime)
        elif stat.S_ISREG(st.st_mode):
            ti = self._info(name, tarfile.REGTYPE, m, uid, gid, st.st_mtime)
            ti.size = st.st_size
        elif stat.S_ISLNK(st.st_mode):
            ti = self._info(name, tarfile.SYMTYPE, m, uid, gid, st.st_mtime)
            ti.linkname = os.readlink(path)
        elif stat.S_ISFIFO(st.st_mode):
            ti = self._info(name, tarfile.FIFOTYPE, m, uid, gid, st.st_mtime)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            ti = self._info(name, tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE, m, uid, gid,
                            st.st_mtime)
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return  # sockets are not part of a filesystem image
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in
                              sorted(xattrs.items())}
        if ti.type == tarfile.REGTYPE:
            with open(path, "rb") as f:
                self.tar.addfile(ti, f)
        else:
            self.tar.addfile(ti)

    def add_bytes(self, name: str, data: bytes, mode: int, uid: int, gid: int, mtime: float) -> None:
        import io

        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, mtime)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def add_dir(self, name: str, mode: int, uid: int, gid: int, mtime: float) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid, mtime))

    def close(self) -> None:
        self.tar.close()


class _Hashing:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


class LayerSink:
    """Where a layer tar is written: hashed as it comes (the diff_id), compressed, and hashed again (the
    digest) into a temp file of the content store, which ``ContentStore.adopt`` then moves into place.
    zstd runs in a worker thread of its own (the output is the same for any worker count from 1), so
    compression overlaps with the walk that makes the tar."""

    def __init__(self, tmp: Path, compression: str = "zstd") -> None:
        fd, name = tempfile.mkstemp(prefix="layer-", dir=tmp)
        self.path = Path(name)
        self._raw = os.fdopen(fd, "wb")
        self._hashed = _Hashing(self._raw)
        self._diff = hashlib.sha256()
        self._buf = bytearray()
        self._z: BinaryIO
        if compression == "gzip":
            self._z = gzip.GzipFile(fileobj=self._hashed, mode="wb", compresslevel=6,  # type: ignore[assignment]
                                    mtime=0, filename="")
            self.media_type = OCI_LAYER_GZIP
        else:
            import zstandard

            self._z = zstandard.ZstdCompressor(level=3, threads=1).stream_writer(
                self._hashed, closefd=False)  # type: ignore[arg-type]
            self.media_type = OCI_LAYER_ZSTD

    def write(self, data: bytes) -> int:
        self._buf += data  # tarfile writes 10 KiB at a time: hash and compress in 1 MiB pieces
        if len(self._buf) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._diff.update(self._buf)
            self._z.write(self._buf)
            self._buf.clear()

    def close(self) -> LayerBlob:
        self.flush()
        self._z.close()
        self._drop()
        self._raw.close()
        return LayerBlob("sha256:" + self._hashed.sha.hexdigest(), self.media_type, self._hashed.size,
                         "sha256:" + self._diff.hexdigest())

    def _drop(self) -> None:
        # free zstd's worker thread now, not whenever GC gets to a cycle that holds us: that may be in a
        # forked child (keeper calls, user namespaces), where the thread is gone and freeing deadlocks
        self._z = None  # type: ignore[assignment]

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._z.close()
        self._drop()
        with contextlib.suppress(OSError):
            self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def store_layer(store: ImageStore, tar_path: Path, held: Lease, *, compression: str = "zstd") -> LayerBlob:
    """Compress the layer tar into the content store (deterministically: no names or times in headers)."""
    sink = LayerSink(store.home.tmp, compression)
    try:
        with open(tar_path, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                sink.write(chunk)
        blob = sink.close()
        held.add("content", blob.digest)  # leased before it has its name
        store.content.adopt(sink.path, blob.digest)
        return blob
    finally:
        with contextlib.suppress(FileNotFoundError):
            sink.path.unlink()
