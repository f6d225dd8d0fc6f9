"""Snapshot nodes: one file's metadata as stored in a tree blob, and the checks that keep names inside a tree.

A node is a JSON object (docs/backup.md): ``name``, ``type`` (dir, file, symlink, chardev, blockdev,
fifo, socket), ``mode`` (the permission bits, 0o7777), ``uid``/``gid`` as seen inside the source's id
range (the caller's id offset subtracted), ``atime_ns``/``mtime_ns``/``ctime_ns``, ``xattrs`` (name →
base64), and per type ``size``/``content``/``extents``/``inode``/``changed`` (files), ``subtree`` (dirs),
``target`` (symlinks), ``rdev`` (devices). Names are file-system bytes kept as str with surrogateescape.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from typing import Any

from flex.errors import FailedPrecondition

__all__ = ["OVERFLOW_ID", "check_name", "metadata_node", "node_type", "read_xattrs"]

OVERFLOW_ID = 65534  # what the kernel shows for an id outside a user namespace's map

_TYPES = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
          stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def node_type(st: os.stat_result) -> str:
    return _TYPES.get(stat.S_IFMT(st.st_mode), "unknown")


def check_name(name: object, where: str) -> str:
    """A node name is one path component: a hostile tree cannot climb out with '..' or '/'."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise FailedPrecondition(f"backup holds a bad file name {name!r} in {where or '/'}",
                                 hint="the backup is damaged or hostile; nothing outside the target was written")
    return name


def read_xattrs(path: str | int) -> dict[str, str]:
    out: dict[str, str] = {}
    follow = isinstance(path, int)  # an open descriptor: nothing to follow, and os refuses the flag
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError:
        return out
    for n in names:
        with contextlib.suppress(OSError):
            out[n] = base64.b64encode(os.getxattr(path, n, follow_symlinks=follow)).decode()
    return out


def _shift(value: int, offset: int) -> int:
    v = value - offset
    return v if 0 <= v < 1 << 32 else OVERFLOW_ID


def metadata_node(name: str, st: os.stat_result, id_offset: int, xattrs: dict[str, str]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": name, "type": node_type(st), "mode": stat.S_IMODE(st.st_mode),
        "uid": _shift(st.st_uid, id_offset), "gid": _shift(st.st_gid, id_offset),
        "atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
    }
    if xattrs:
        node["xattrs"] = xattrs
    return node
