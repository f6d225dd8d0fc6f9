"""Backup: walk directories into tree and data blobs and write a snapshot. Imports nothing from flex but flex.errors.

Each directory becomes a tree blob, each file a list of content-defined chunks (FastCDC), so an
unchanged directory costs one dedup lookup and a changed file stores only its changed chunks. With a
parent snapshot, a file whose size, mtime, ctime and inode match is not read at all (restic's rule).

A tree that is in use is read file by file, each once: a file whose size or times change while it is
read is read again (twice at most) and otherwise stored as read and marked ``changed`` in its node.
Holes are found with SEEK_DATA/SEEK_HOLE and kept as extents; hardlinks share an ``inode`` number.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flex.backup.chunker import Chunker
from flex.backup.nodes import IdRows, id_rows, metadata_node, node_type, read_xattrs
from flex.backup.pack import BLOB_DATA
from flex.backup.repository import Repository, Snapshot
from flex.errors import NotFound

__all__ = ["BackupSummary", "backup"]

_NOATIME = getattr(os, "O_NOATIME", 0)
_RETRIES = 2


@dataclass
class BackupSummary:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    blobs_added: int = 0
    bytes_added: int = 0
    vanished: int = 0
    changed_during_read: list[str] = field(default_factory=list)


def _extents(fd: int, st: os.stat_result) -> list[list[int]]:
    if st.st_blocks * 512 >= st.st_size:
        return [[0, st.st_size]]
    out, pos = [], 0
    while pos < st.st_size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                break  # only a hole is left
            return [[0, st.st_size]]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), st.st_size)
        out.append([start, end - start])
        pos = end
    return out


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


class _Archiver:
    def __init__(self, repo: Repository, uids: IdRows, gids: IdRows):
        self.repo = repo
        self.uids, self.gids = uids, gids
        c = repo.config["chunker"]
        self.min_size = int(c["min_size"])
        self.chunker = Chunker(int(c["avg_size"]), self.min_size, int(c["max_size"]), repo.key.chunker_seed)
        self.summary = BackupSummary()
        self.inodes: dict[tuple[int, int], int] = {}

    def _parent_nodes(self, subtree: str | None) -> dict[str, dict[str, Any]]:
        if not subtree:
            return {}
        try:
            return {n["name"]: n for n in self.repo.load_tree(subtree)}
        except Exception:
            return {}

    def _read(self, fd: int, st: os.stat_result) -> tuple[list[str], list[list[int]]]:
        content: list[str] = []
        extents = _extents(fd, st)
        for off, length in extents:
            if length <= self.min_size:
                data = os.pread(fd, length, off)
                content.append(self.repo.save_blob(BLOB_DATA, data).hex())
                self.summary.bytes_read += len(data)
                continue
            for chunk in self.chunker.chunks(fd, off, length):
                content.append(self.repo.save_blob(BLOB_DATA, chunk).hex())
                self.summary.bytes_read += len(chunk)
        return content, extents

    def file(self, path: str, name: str, st: os.stat_result, prev: dict[str, Any] | None) -> dict[str, Any] | None:
        if prev is not None and prev.get("type") == "file" and prev.get("ino") == st.st_ino and \
                (prev.get("size"), prev.get("mtime_ns"), prev.get("ctime_ns")) == \
                (st.st_size, st.st_mtime_ns, st.st_ctime_ns) and \
                all(self.repo.has_blob(bytes.fromhex(b)) for b in prev.get("content", [])):
            node = metadata_node(name, st, self.uids, self.gids, read_xattrs(path))
            node.update({k: prev[k] for k in ("content", "extents") if k in prev})
            self.summary.files_unmodified += 1
        else:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _NOATIME)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                for _ in range(_RETRIES + 1):
                    before = os.fstat(fd)
                    content, extents = self._read(fd, before)
                    st = os.fstat(fd)
                    if _same(before, st):
                        break
                node = metadata_node(name, st, self.uids, self.gids, read_xattrs(fd))
                if not _same(before, st):
                    node["changed"] = True
                    self.summary.changed_during_read.append(path)
            finally:
                os.close(fd)
            node["content"] = content
            if extents != [[0, st.st_size]] and st.st_size:
                node["extents"] = extents
            if prev is None:
                self.summary.files_new += 1
            else:
                self.summary.files_changed += 1
        node["size"] = st.st_size
        node["ino"] = st.st_ino
        if st.st_nlink > 1:
            node["inode"] = self.inodes.setdefault((st.st_dev, st.st_ino), len(self.inodes) + 1)
        self.summary.bytes_total += st.st_size
        return node

    def entry(self, path: str, name: str, prev: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            st = os.lstat(path)
            kind = node_type(st)
            if kind == "file":
                return self.file(path, name, st, prev)
            node = metadata_node(name, st, self.uids, self.gids, read_xattrs(path))
            if kind == "dir":
                node["subtree"] = self.directory(path, prev.get("subtree") if prev else None)
            elif kind == "symlink":
                node["target"] = os.readlink(path)
            elif kind in ("chardev", "blockdev"):
                node["rdev"] = st.st_rdev
            return node
        except FileNotFoundError:
            self.summary.vanished += 1  # removed while we walked: a running environment
            return None

    def directory(self, path: str, parent_subtree: str | None) -> str:
        self.summary.dirs += 1
        prev = self._parent_nodes(parent_subtree)
        with os.scandir(path) as it:
            names = sorted(e.name for e in it)
        nodes = []
        for name in names:
            node = self.entry(os.path.join(path, name), name, prev.get(name))
            if node is not None:
                nodes.append(node)
        return self.repo.save_tree(nodes)


def backup(repo: Repository, sources: Mapping[str, Path], *, id_offset: int = 0, parent: Snapshot | None = None,
           tags: list[str] | None = None, meta: dict[str, Any] | None = None,
           id_map: tuple[IdRows, IdRows] | None = None) -> tuple[Snapshot, BackupSummary]:
    """Back up each source (a directory or file) as an entry named by its key of the snapshot's root tree.

    Owners are stored as seen inside the source's user namespace: through ``id_map`` (its uid and gid rows,
    for a map that is not one range: a rootless ``keep-id`` container's), else with ``id_offset`` subtracted.
    An id outside the map is stored as OVERFLOW_ID. The caller holds a lock (``flex.backup.lock``)."""
    uids, gids = id_map if id_map is not None else (id_rows(id_offset), id_rows(id_offset))
    arch = _Archiver(repo, uids, gids)
    repo.added_blobs = repo.added_bytes = 0
    prev_root = arch._parent_nodes(parent.tree) if parent else {}
    nodes = []
    for name in sorted(sources):
        src = sources[name]
        if not os.path.lexists(src):
            raise NotFound(f"{src} does not exist", hint="nothing was backed up")
        node = arch.entry(str(src), name, prev_root.get(name))
        if node is not None:
            nodes.append(node)
    tree = repo.save_tree(nodes)
    repo.flush()
    arch.summary.blobs_added = repo.added_blobs
    arch.summary.bytes_added = repo.added_bytes
    body = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), "tree": tree,
            "tags": sorted(tags or []), "hostname": socket.gethostname(), "parent": parent.id if parent else None,
            "summary": asdict(arch.summary),
            "meta": {"id_offset": id_offset, **({"id_map": [list(uids), list(gids)]} if id_map else {}),
                     **(meta or {})}}
    return repo.save_snapshot(body), arch.summary
