"""Layers a build makes: an overlay upper directory, or files for COPY, as an OCI layer tar.

Upper dir → tar: overlay whiteouts (0/0 character devices, or files carrying ``overlay.whiteout``)
become ``.wh.<name>`` entries; opaque directories (``trusted.overlay.opaque`` when real root mounted
the overlay, ``user.overlay.opaque`` under ``userxattr``) get a ``.wh..wh..opq`` entry; other
``*.overlay.*`` xattrs never leave the machine. Entries are sorted, names and modes exact, owners
numeric, user and group names empty, hard links kept; with SOURCE_DATE_EPOCH, mtimes are clamped
to it, so the same inputs give the same bytes. ``store_layer`` compresses (zstd by default, gzip on
request) into the content store and returns the descriptor and diff_id.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flex.runtime.images.mediatypes import OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from flex.runtime.images.store import ImageStore
from flex.runtime.leases.leases import Lease

__all__ = ["LayerBlob", "TarWriter", "source_date_epoch", "store_layer", "tar_upper"]

_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT = ("trusted.overlay.whiteout", "user.overlay.whiteout")


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    media_type: str
    size: int
    diff_id: str


def _xattrs(path: str) -> dict[str, bytes]:
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


def tar_upper(upper: Path, out_path: Path, *, id_of: Callable[[int], int] | None, epoch: int | None) -> int:
    """Write the overlay upper dir ``upper`` as a layer tar at ``out_path``; returns the entry count."""
    conv = id_of or (lambda i: i)
    count = 0
    with open(out_path, "wb") as out:
        w = TarWriter(out, epoch)

        def walk(rel: str) -> None:
            nonlocal count
            base = os.path.join(upper, rel) if rel else str(upper)
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                arc = f"{rel}/{name}" if rel else name
                st = os.lstat(path)
                xa = _xattrs(path)
                count += 1
                if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or any(k in xa for k in _WHITEOUT):
                    w.whiteout(f"{rel}/.wh.{name}" if rel else f".wh.{name}", st.st_mtime)
                    continue
                keep = {k: v for k, v in xa.items() if ".overlay." not in k}
                w.add_path(arc + ("/" if stat.S_ISDIR(st.st_mode) else ""), path, st, conv(st.st_uid),
                           conv(st.st_gid), keep)
                if stat.S_ISDIR(st.st_mode):
                    if any(xa.get(k) == b"y" for k in _OPAQUE):
                        w.whiteout(f"{arc}/.wh..wh..opq", st.st_mtime)
                    walk(arc)

        walk("")
        w.close()
    return count


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


def store_layer(store: ImageStore, tar_path: Path, held: Lease, *, compression: str = "zstd") -> LayerBlob:
    """Compress the layer tar into the content store (deterministically: no names or times in headers)."""
    diff = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix="layer-", dir=store.home.tmp)
    try:
        with os.fdopen(fd, "wb") as raw, open(tar_path, "rb") as src:
            hashed = _Hashing(raw)
            chunks: Iterable[bytes] = iter(lambda: src.read(1 << 20), b"")
            if compression == "gzip":
                with gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
                    for chunk in chunks:
                        diff.update(chunk)
                        gz.write(chunk)
                media_type = OCI_LAYER_GZIP
            else:
                import zstandard

                cctx = zstandard.ZstdCompressor(level=3)
                with cctx.stream_writer(hashed, closefd=False) as zw:  # type: ignore[arg-type]
                    for chunk in chunks:
                        diff.update(chunk)
                        zw.write(chunk)
                media_type = OCI_LAYER_ZSTD
        digest = "sha256:" + hashed.sha.hexdigest()
        held.add("content", digest)
        if not store.content.exists(digest):
            with open(tmp, "rb") as f:
                store.content.ingest(iter(lambda: f.read(1 << 20), b""), digest)
        return LayerBlob(digest, media_type, hashed.size, "sha256:" + diff.hexdigest())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
