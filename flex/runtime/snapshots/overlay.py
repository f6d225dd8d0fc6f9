"""The overlayfs snapshotter: one directory per snapshot under FLEX_HOME/snapshots/<id>/{fs,work}.

Metadata (key, kind, parent, labels, ownership) lives in the runtime database (component "snapshots");
a row is inserted before its directory is made and deleted before its directory goes, so a crash leaves
at most a directory without a row, which ``cleanup()`` removes. Committed snapshots are overlay lower
dirs; an active one adds an upper and a work dir. Ownership is recorded per snapshot: "unshifted" as
root (containers idmap the lower dirs), or the id map applied at unpack time (rootless), in which case
the mounts carry ``userxattr`` because the overlay is mounted inside a user namespace.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flex.errors import AlreadyExists, FailedPrecondition, NotFound
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.base.mount import Mount
from flex.runtime.snapshots.base import Info, Kind, Usage

__all__ = ["OverlaySnapshotter"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        parent TEXT REFERENCES snapshots(key) ON UPDATE CASCADE,
        labels TEXT NOT NULL DEFAULT '{}',
        ownership TEXT NOT NULL DEFAULT 'unshifted',
        created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent)",
]


class OverlaySnapshotter:
    def __init__(self, root: Path, db: MetadataDB, *, ownership: str = "unshifted"):
        self.root = root
        self.db = db
        self.ownership = ownership
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        db.ensure_schema("snapshots", 1, _SCHEMA)

    # -- helpers ----------------------------------------------------------------------------------
    def _row(self, key: str) -> Any:
        row = self.db.query_one("SELECT * FROM snapshots WHERE key = ?", (key,))
        if row is None:
            raise NotFound(f"snapshot {key!r} does not exist")
        return row

    def _info(self, row: Any) -> Info:
        return Info(key=row["key"], kind=Kind(row["kind"]), parent=row["parent"],
                    labels=json.loads(row["labels"]), created=row["created"], ownership=row["ownership"])

    def dir(self, key: str) -> Path:
        """The snapshot's own directory (``…/fs``): write a layer here between prepare and commit."""
        return self.root / str(self._row(key)["id"]) / "fs"

    def lowers(self, key: str) -> list[Path]:
        """The directories of ``key`` and its ancestors, top first (an image's overlay lowerdir)."""
        out: list[Path] = []
        cur: str | None = key
        while cur is not None:
            row = self._row(cur)
            out.append(self.root / str(row["id"]) / "fs")
            cur = row["parent"]
        return out

    def _create(self, key: str, parent: str | None, kind: Kind, labels: Mapping[str, str] | None) -> None:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                raise AlreadyExists(f"snapshot {key!r} already exists")
            if parent is not None:
                prow = conn.execute("SELECT kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
                if prow is None:
                    raise NotFound(f"parent snapshot {parent!r} does not exist")
                if prow["kind"] != Kind.COMMITTED.value:
                    raise FailedPrecondition(f"parent snapshot {parent!r} is not committed")
            cur = conn.execute(
                "INSERT INTO snapshots (key, kind, parent, labels, ownership, created) VALUES (?,?,?,?,?,?)",
                (key, kind.value, parent, json.dumps(dict(labels or {}), sort_keys=True), self.ownership,
                 time.time()))
            sid = cur.lastrowid
        base = self.root / str(sid)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(base)  # left by a crash between an old remove's row delete and rmtree
        base.mkdir(mode=0o711)
        (base / "fs").mkdir(mode=0o755)
        (base / "work").mkdir(mode=0o700)

    # -- Snapshotter ------------------------------------------------------------------------------
    def stat(self, key: str) -> Info:
        return self._info(self._row(key))

    def prepare(self, key: str, parent: str | None = None, *,
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        self._create(key, parent, Kind.ACTIVE, labels)
        return self._mounts(key)

    def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"snapshot {key!r} does not exist")
            if row["kind"] != Kind.ACTIVE.value:
                raise FailedPrecondition(f"snapshot {key!r} is {row['kind']}, only an active one can be committed")
            if conn.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise AlreadyExists(f"snapshot {name!r} already exists")
            merged = {**json.loads(row["labels"]), **dict(labels or {})}
            conn.execute("UPDATE snapshots SET key = ?, kind = ?, labels = ? WHERE id = ?",
                         (name, Kind.COMMITTED.value, json.dumps(merged, sort_keys=True), row["id"]))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.root / str(row["id"]) / "work")

    def _mounts(self, key: str) -> list[Mount]:
        """An active snapshot's mounts: a bind of its directory, or an overlay on its parents (top first;
        mount one with base/overlayfs.py, which takes any number of lower dirs)."""
        row = self._row(key)
        base = self.root / str(row["id"])
        if not row["parent"]:
            return [Mount("bind", str(base / "fs"), options=("rbind", "rw"))]
        lower = ":".join(str(p) for p in self.lowers(row["parent"]))
        extra = ("userxattr",) if row["ownership"] != "unshifted" else ()
        return [Mount("overlay", "overlay", options=(f"lowerdir={lower}", f"upperdir={base / 'fs'}",
                                                      f"workdir={base / 'work'}", *extra))]

    def remove(self, key: str) -> None:
        _remove_tree(self.forget(key), self.root)

    def forget(self, key: str) -> Path:
        """Delete ``key``'s row (no children allowed) and return its directory, which the caller removes
        with ``remove_dir`` once its transaction has committed: GC keeps the database's write lock for
        rows only, never for a tree walk. A crash in between leaves a directory without a row (cleanup)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id FROM snapshots WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"snapshot {key!r} does not exist")
            if conn.execute("SELECT 1 FROM snapshots WHERE parent = ?", (key,)).fetchone():
                raise FailedPrecondition(f"snapshot {key!r} has children; remove them first")
            conn.execute("DELETE FROM snapshots WHERE id = ?", (row["id"],))
        return self.root / str(row["id"])

    def remove_dir(self, path: Path) -> int:
        """Remove a forgotten snapshot's directory; returns the bytes it held."""
        size = _tree_size(path)
        _remove_tree(path, self.root)
        return size

    def walk(self) -> Iterator[Info]:
        for row in self.db.query("SELECT * FROM snapshots ORDER BY id"):
            yield self._info(row)

    def usage(self, key: str) -> Usage:
        return _tree_usage(self.root / str(self._row(key)["id"]))

    def cleanup(self) -> int:
        """Remove snapshot directories that have no row (left by a crash); returns how many."""
        ids = {str(r["id"]) for r in self.db.query("SELECT id FROM snapshots")}
        n = 0
        for entry in self.root.iterdir():
            if entry.name.isdigit() and entry.name not in ids:
                # a prepare() may have inserted its row after we read the ids (rows come before dirs)
                if self.db.query_one("SELECT 1 FROM snapshots WHERE id = ?", (int(entry.name),)):
                    continue
                _remove_tree(entry, self.root)
                n += 1
            elif entry.name.startswith(".removing-"):
                shutil.rmtree(entry, ignore_errors=True)
        return n


def _tree_usage(path: Path) -> Usage:
    size = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            size += st.st_blocks * 512
    return Usage(size=size, inodes=inodes)


def _tree_size(path: Path) -> int:
    try:
        return _tree_usage(path).size
    except OSError:
        return 0


def _remove_tree(path: Path, root: Path) -> None:
    """Rename away first so a half-removed directory is never mistaken for a live snapshot."""
    trash = root / f".removing-{os.urandom(16).hex()}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
