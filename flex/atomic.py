"""Atomic file writes: a unique temp file beside the target, then rename. Shared by every layer, like flex.errors.

Readers never see half a file, and two writers never share a temp name. ``durable=True`` also fsyncs
the file before the rename and the directory after it, for state that must survive a crash of the machine
(exit codes, credentials, keys); files rebuilt on every start (bundles, pid files, /etc files for
containers) skip it. The temp file is created 0600, so a secret is never readable by others, even briefly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "exchange", "fsync_dir", "write_atomic"]


def exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE): neither is ever missing, even after a crash."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"exchanging {a} and {b}: {os.strerror(err)}")


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` survive a crash of the machine."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new content into; it replaces ``path`` when the block ends without an
    error, and is removed when it raises."""
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new 0600 file beside ``path`` under a random name, as tempfile.mkstemp makes it (whose import,
    random and shutil with it, costs a `flex runtime run` ~3 ms)."""
    while True:
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step."""
    with atomic_file(path, mode=mode, durable=durable) as f:
        f.write(data.encode() if isinstance(data, str) else data)
