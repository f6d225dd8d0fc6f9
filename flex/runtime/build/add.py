"""What ADD does beyond COPY: a local tar archive (plain, gzip, bzip2, xz, zstd) is unpacked into the
destination, and an http(s) URL is downloaded (checked against ``--checksum=sha256:...`` when given).

Archive members are rebased under the destination; a member that would leave it (``..``, an absolute
link target for a hard link) is refused. Owners are kept from the archive unless ``--chown`` is given,
as Docker does; the layer applier checks every entry again at unpack (tarsafe).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from flex.errors import InvalidArgument, Unavailable
from flex.runtime.build.layer import TarWriter

__all__ = ["download", "emit_archive", "is_archive"]

_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def is_archive(path: Path) -> bool:
    """A regular file that is a tar archive, compressed or not (sniffed, as Docker does)."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(_MAGIC[3]):
        return True
    if any(head.startswith(m) for m in _MAGIC[:3]):
        try:
            with tarfile.open(path) as t:
                return t.next() is not None
        except (tarfile.TarError, OSError, EOFError):
            return False
    return len(head) == 512 and head[257:262] == b"ustar"


def _open(path: Path) -> tarfile.TarFile:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _MAGIC[3]:
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115 (tar closes it)
        return tarfile.open(fileobj=data, mode="r|")
    return tarfile.open(path, mode="r|*")


def emit_archive(w: TarWriter, path: Path, dest: str, *, owner: tuple[int, int] | None, where: str,
                 exists: Callable[[str], bool]) -> int:
    """Re-emit the archive's members under ``dest`` into ``w``; returns how many. Parents the archive
    leaves implied and the image lacks (``exists``: an absolute path in the image) are made root, 0755."""
    n = 0
    base = dest.strip("/")
    seen: set[str] = set()
    with _open(path) as t:
        for m in t:
            name = posixpath.normpath(m.name.lstrip("./") or ".")
            if name == ".":
                continue
            if name.startswith("../") or name == "..":
                raise InvalidArgument(f"{where}: ADD {path.name}: member {m.name!r} leaves the destination")
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in seen:
                    seen.add(parent)
                    if exists("/" + (posixpath.join(base, parent) if base else parent)):
                        continue
                    w.add_dir((posixpath.join(base, parent) if base else parent) + "/", 0o755, 0, 0,
                              w.epoch if w.epoch is not None else m.mtime)
                    n += 1
            seen.add(name)
            m.name = posixpath.join(base, name) if base else name
            if m.islnk():
                link = posixpath.normpath(m.linkname.lstrip("./"))
                if link.startswith(".."):
                    raise InvalidArgument(f"{where}: ADD {path.name}: hard link {m.name!r} leaves the destination")
                m.linkname = posixpath.join(base, link) if base else link
            if owner is not None:
                m.uid, m.gid = owner
            m.uname = m.gname = ""
            if w.epoch is not None:
                m.mtime = min(int(m.mtime), w.epoch)
            f = t.extractfile(m) if m.isreg() else None
            w.tar.addfile(m, f)
            n += 1
    return n


def download(url: str, checksum: str | None, tmp: Path, where: str) -> tuple[Path, float | None]:
    """Fetch ``url`` into a file under ``tmp``; returns it and its Last-Modified time, if any."""
    import httpx

    if checksum is not None and not (checksum.startswith("sha256:") and len(checksum) == 71):
        raise InvalidArgument(f"{where}: --checksum={checksum}: expected sha256:<64 hex digits>")
    fd, name = tempfile.mkstemp(prefix="add-", dir=tmp)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise Unavailable(f"{where}: ADD {url}: HTTP {resp.status_code}")
            for chunk in resp.iter_bytes(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = resp.headers.get("last-modified")
    except httpx.HTTPError as err:
        os.unlink(name)
        raise Unavailable(f"{where}: ADD {url}: {err}") from err
    except BaseException:
        os.unlink(name)
        raise
    if checksum is not None and "sha256:" + h.hexdigest() != checksum:
        os.unlink(name)
        raise InvalidArgument(f"{where}: ADD {url}: checksum mismatch (got sha256:{h.hexdigest()})",
                              hint="the file changed at its source, or --checksum is wrong")
    mtime = None
    if modified:
        from email.utils import parsedate_to_datetime  # (lazy: email pulls in half the stdlib)

        try:
            mtime = parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = None
    return Path(name), mtime
