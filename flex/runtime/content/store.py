"""The content store: blobs addressed by digest under FLEX_HOME/content/blobs/<algorithm>/<hex>.

Every write streams into a temp file in FLEX_HOME/tmp, hashing and counting as it goes; only when the
size and digest match what was expected is the file fsynced and renamed into place. A crash at any
point leaves at most a stray temp file (removed by GC), never a blob that looks complete. Blobs are
read-only once written.

A download is resumable (``resumable_writer``): its temp file is ``tmp/partial-<algo>-<hex>``, keyed by
the digest and held under flock while written, and it is kept when the download breaks off (or the
process is killed), so the next attempt hashes what is there and continues after it (an HTTP Range
request); the digest is still checked over the whole blob. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from flex.errors import InvalidArgument, NotFound

_PARTIAL_MAX_AGE = 24 * 3600.0  # an unfinished download older than this is not worth resuming

__all__ = ["DIGEST_RE", "BlobWriter", "ContentStore", "DigestMismatch", "check_digest", "sha256_digest"]

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")


class DigestMismatch(InvalidArgument):
    """A blob's bytes do not match the digest or size it was announced with."""


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}", hint="expected sha256:<64 hex digits>")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobWriter:
    """Streams one blob into a temp file; ``commit()`` verifies and renames it into place."""

    def __init__(self, store: ContentStore, expected: str | None, size: int | None, *, resumable: bool = False):
        self.store = store
        self.expected = check_digest(expected) if expected else None
        self.expected_size = size
        algo = (expected or "sha256:").split(":", 1)[0]
        self._hash = hashlib.new(algo)
        self._algo = algo
        self.written = 0
        self.digest: str | None = None
        partial = _open_partial(store.tmp, self.expected) if resumable and self.expected else None
        if partial is None:
            fd, name = _mkstemp(store.tmp, f"ingest-{os.getpid()}-")
            self.path = Path(name)
            self.resumable = False
        else:
            fd, self.path = partial
            self.resumable = True
        self._file: BinaryIO = os.fdopen(fd, "r+b")
        if self.resumable:
            self._take_over()

    def _take_over(self) -> None:
        """Hash what an earlier attempt left, so the digest covers the whole blob (a kill can leave a
        tail that was never written: the final check catches that)."""
        have = os.fstat(self._file.fileno()).st_size
        if self.expected_size is not None and have > self.expected_size:
            self.restart()
            return
        for chunk in iter(lambda: self._file.read(1 << 20), b""):
            self._hash.update(chunk)
            self.written += len(chunk)

    def restart(self) -> None:
        """Throw away what is there and start from byte 0 (the server ignored a Range request)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.new(self._algo)
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.expected_size is not None and self.written > self.expected_size:
            raise DigestMismatch(f"blob {self.expected or ''} is larger than its announced size {self.expected_size}")
        self._hash.update(chunk)
        self._file.write(chunk)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> str:
        digest = f"{self._algo}:{self._hash.hexdigest()}"
        if self.expected_size is not None and self.written != self.expected_size:
            raise DigestMismatch(f"blob {self.expected or digest}: got {self.written} bytes, expected "
                                 f"{self.expected_size}")
        if self.expected is not None and digest != self.expected:
            raise DigestMismatch(f"digest mismatch: expected {self.expected}, got {digest}",
                                 hint="the registry or the network corrupted the data; pull again")
        self._file.flush()
        os.fsync(self._file.fileno())
        os.chmod(self.path, 0o444)
        final = self.store.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, final)  # still open: a partial's lock lasts until it has left its name
        self._file.close()
        _fsync_dir(final.parent)
        self.digest = digest
        return digest

    def abort(self, keep: bool = False) -> None:
        """Close; the temp file goes unless ``keep`` (a resumable download that broke off)."""
        if keep and self.resumable:
            with contextlib.suppress(OSError):
                self._file.flush()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # before the lock goes with the close
        with contextlib.suppress(OSError):
            self._file.close()


class ContentStore:
    def __init__(self, root: Path, tmp: Path):
        self.root = root
        self.tmp = tmp
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexpart = check_digest(digest).partition(":")
        return self.root / "blobs" / algo / hexpart

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError as err:
            raise NotFound(f"blob {digest} is not in the content store") from err

    def read(self, digest: str, *, max_size: int | None = None) -> bytes:
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                if max_size is not None and os.fstat(f.fileno()).st_size > max_size:
                    raise InvalidArgument(f"blob {digest} is larger than {max_size} bytes")
                return f.read()
        except FileNotFoundError as err:
            raise NotFound(f"blob {digest} is not in the content store") from err

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError as err:
            raise NotFound(f"blob {digest} is not in the content store") from err

    @contextlib.contextmanager
    def writer(self, expected: str | None = None, size: int | None = None) -> Iterator[BlobWriter]:
        """``with store.writer(digest, size) as w: w.write(...)``; committed on a clean exit."""
        w = BlobWriter(self, expected, size)
        try:
            yield w
            if w.digest is None:
                w.commit()
        finally:
            if w.digest is None:
                w.abort()

    @contextlib.contextmanager
    def resumable_writer(self, expected: str, size: int | None = None) -> Iterator[BlobWriter]:
        """Like ``writer``, continuing what an earlier attempt left for this digest (``w.written`` bytes,
        already hashed): the caller fetches from there. Kept if the block raises anything but a digest
        mismatch; when another process is writing the same blob, a private temp file is used."""
        w = BlobWriter(self, expected, size, resumable=True)
        keep = False
        try:
            yield w
            if w.digest is None:
                w.commit()
        except DigestMismatch:
            raise
        except BaseException:
            keep = True
            raise
        finally:
            if w.digest is None:
                w.abort(keep=keep)

    def ingest(self, chunks: Iterable[bytes], expected: str | None = None, size: int | None = None) -> str:
        with self.writer(expected, size) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def adopt(self, path: Path, digest: str, *, synced: bool = False) -> str:
        """Move ``path``, a finished temp file in this store's tmp dir, into place as ``digest`` once its
        bytes hash to it (a layer a build wrote there while it made the tar: no second copy). ``synced``:
        the caller has flushed the file's filesystem (one syncfs for a layer's files and its blob)."""
        algo = check_digest(digest).split(":", 1)[0]
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            if f"{algo}:{h.hexdigest()}" != digest:
                raise DigestMismatch(f"{path.name}: its bytes do not hash to {digest}")
            if not synced:
                os.fsync(f.fileno())
        os.chmod(path, 0o444)
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)
        _fsync_dir(final.parent)
        return digest

    def put(self, data: bytes, expected: str | None = None) -> str:
        if expected is not None and self.exists(expected):
            return expected
        return self.ingest([data], expected, len(data))

    def walk(self) -> Iterator[str]:
        base = self.root / "blobs"
        if not base.is_dir():
            return
        for algo in sorted(base.iterdir()):
            for blob in sorted(algo.iterdir()):
                yield f"{algo.name}:{blob.name}"

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove ingest temp files left by crashed writers: their writer process is gone, or they are
        older than ``older_than`` seconds. The name carries the writer's pid."""
        n = 0
        now = time.time()
        for p in self.tmp.glob("ingest-*"):
            pid = p.name.split("-")[1]
            dead = pid.isdigit() and not os.path.exists(f"/proc/{pid}")
            with contextlib.suppress(FileNotFoundError):
                if dead or now - p.stat().st_mtime > older_than:
                    p.unlink()
                    n += 1
        for p in self.tmp.glob("partial-*"):  # kept for a resume, unless a writer holds it or it is stale
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime > max(older_than, _PARTIAL_MAX_AGE) and _unlink_unlocked(p):
                    n += 1
        return n


def _mkstemp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=prefix, dir=directory)


def _open_partial(tmp: Path, digest: str) -> tuple[int, Path] | None:
    """Open and lock ``tmp/partial-<algo>-<hex>``; None if another writer holds it. The lock is checked
    to be on the file that is still at that name: a writer that finished renamed it into the store, one
    that failed unlinked it, and writing into either inode would be wrong."""
    algo, _, hexpart = digest.partition(":")
    path = tmp / f"partial-{algo}-{hexpart}"
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd, path
        except FileNotFoundError:
            pass
        os.close(fd)
    return None


def _unlink_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        path.unlink()
        return True
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
