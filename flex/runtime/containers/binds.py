"""Bind mounts given with ``-v SRC:DST[:ro]``: parsed and resolved without following untrusted symlinks.

The OCI runtime follows symlinks in a mount source as root. So the source is made absolute, every
component is checked, and a symlink anywhere in it that is not owned by root (a link a user or an
untrusted repository could have planted, e.g. ``workspace/data -> /etc``) is refused; root-owned system
links (``/var/run -> /run``) are followed. What crun gets is the fully resolved path. The destination
must be an absolute path without ``..``; crun resolves it inside the container's root. Imports nothing
from flex but flex.errors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from flex.errors import InvalidArgument, NotFound

__all__ = ["resolve_bind"]


def _check_source(raw: str) -> Path:
    path = Path(os.path.abspath(raw))
    cur = Path("/")
    for part in path.parts[1:]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise NotFound(f"-v {raw}: {cur} does not exist") from None
        if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
            raise InvalidArgument(
                f"-v {raw}: {cur} is a symlink (to {os.readlink(cur)}) owned by uid {st.st_uid}; refusing to "
                "follow it", hint="give the real path of the directory to mount")
    return path.resolve(strict=True)


def resolve_bind(value: str) -> tuple[Path, str, bool]:
    """``SRC:DST[:ro|rw]`` → (resolved source, destination, read-only)."""
    parts = value.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        src, dst, mode = parts
    elif len(parts) == 2:
        (src, dst), mode = parts, "rw"
    else:
        raise InvalidArgument(f"-v {value!r}: expected SRC:DST or SRC:DST:ro")
    if not src or not dst:
        raise InvalidArgument(f"-v {value!r}: expected SRC:DST or SRC:DST:ro")
    pdst = PurePosixPath(dst)
    if not pdst.is_absolute() or ".." in pdst.parts:
        raise InvalidArgument(f"-v {value!r}: the destination must be an absolute path without '..'")
    return _check_source(src), str(pdst), mode == "ro"
