"""Snapshot nodes: one file's metadata as stored in a tree blob, and the checks that keep names inside a tree.

A node is a JSON object (docs/backup.md): ``name``, ``type`` (dir, file, symlink, chardev, blockdev,
fifo, socket), ``mode`` (the permission bits, 0o7777), ``uid``/``gid`` as seen inside the source's id
range (through the caller's id map, or its id offset subtracted), ``atime_ns``/``mtime_ns``/``ctime_ns``,
``xattrs`` (name → base64), and per type ``size``/``content``/``extents``/``inode``/``changed`` (files),
``subtree`` (dirs), ``target`` (symlinks), ``rdev`` (devices). Names are file-system bytes kept as str with
surrogateescape.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from typing import Any

from flex.errors import FailedPrecondition

__all__ = ["OVERFLOW_ID", "IdRows", "check_name", "id_rows", "metadata_node", "node_type", "read_xattrs"]

OVERFLOW_ID = 65534  # what the kernel shows for an id outside a user namespace's map
IdRows = tuple[tuple[int, int, int], ...]  # (id inside, id outside, count), as OCI's uidMappings

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


def id_rows(id_offset: int = 0, rows: object = None) -> IdRows:
    """A source's map: ``rows`` as given (lists of three ints: a job's JSON), else everything from ``id_offset``
    up."""
    if rows is None:
        return ((0, id_offset, (1 << 32) - id_offset),)
    def good(r: object) -> bool:
        return isinstance(r, list | tuple) and len(r) == 3 and all(isinstance(v, int) and v >= 0 for v in r)

    if not isinstance(rows, list | tuple) or not all(good(r) for r in rows):
        raise FailedPrecondition(f"id map {rows!r}: not rows of (inside, outside, count)")
    return tuple((int(a), int(b), int(c)) for a, b, c in rows)


def _inside(value: int, rows: IdRows) -> int:
    for inside, outside, count in rows:
        if outside <= value < outside + count:
            return inside + value - outside
    return OVERFLOW_ID


def metadata_node(name: str, st: os.stat_result, uids: IdRows, gids: IdRows, xattrs: dict[str, str]
                  ) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": name, "type": node_type(st), "mode": stat.S_IMODE(st.st_mode),
        "uid": _inside(st.st_uid, uids), "gid": _inside(st.st_gid, gids),
        "atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
    }
    if xattrs:
        node["xattrs"] = xattrs
    return node
