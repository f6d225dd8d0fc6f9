"""A store in a local directory (the runner's default: FLEX_HOME/backups/). Imports nothing from flex but flex.errors.

``put`` writes a temp file, fsyncs it and hard-links it to its name, so a crash leaves either the whole
object or none, and an existing object is never replaced. A spool (a pack being built) is an unnamed
O_TMPFILE file under ``data/``, linked to its name once it is whole and fsynced. Directories and files
are owner-only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flex.atomic import fsync_dir
from flex.backup.stores.base import Spool, temp_fd
from flex.errors import NotFound, Unavailable

__all__ = ["LocalStore"]


class LocalStore:
    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad object name {name!r}")
        return self.root / name

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o400)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            fsync_dir(path.parent)
        except OSError as err:
            raise Unavailable(f"cannot write {path}: {err.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def spool(self) -> Spool:
        where = self.root / "data"
        try:
            where.mkdir(parents=True, exist_ok=True, mode=0o700)
            return Spool(*temp_fd(str(where)))
        except OSError as err:
            raise Unavailable(f"cannot write in {where}: {err.strerror}") from None

    def put_spool(self, name: str, spool: Spool) -> None:
        path = self._path(name)
        try:
            os.fsync(spool.fd)
            os.fchmod(spool.fd, 0o400)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # a dir_fd makes os.link use linkat(AT_SYMLINK_FOLLOW): /proc/self/fd/N is the unnamed file
                with contextlib.suppress(FileExistsError):  # the same content is there already
                    os.link(spool.path or f"/proc/self/fd/{spool.fd}", path.name, dst_dir_fd=dfd)
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as err:
            raise Unavailable(f"cannot write {path}: {err.strerror}") from None
        finally:
            spool.close()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                if length is None:
                    f.seek(offset)
                    return f.read()
                return os.pread(f.fileno(), length, offset)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{self._path(name)} does not exist") from None

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for f in sorted(files):
                if not f.startswith(".tmp-"):
                    yield str(Path(dirpath, f).relative_to(self.root))

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()
