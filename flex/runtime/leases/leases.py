"""Leases: what an in-progress operation (a pull, an import) holds so GC leaves it alone.

A lease is a row with an expiry and its owner's pid + process start time; resources (content digests,
snapshot keys) are added to it *before* they are written or reused. GC ignores a lease only once it
has expired or its owner process is gone (killed pulls do not pin garbage forever). Component
"leases" in the runtime database. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flex.runtime.base.metadata import MetadataDB
from flex.runtime.base.procfs import proc_stat

__all__ = ["Lease", "ensure_schema", "held_resources", "lease"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS leases (
        id TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL, pid INTEGER, pid_start TEXT)""",
    """CREATE TABLE IF NOT EXISTS lease_resources (
        lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, ref TEXT NOT NULL, PRIMARY KEY (lease_id, kind, ref))""",
]


def _start_time(pid: int) -> str | None:
    st = proc_stat(pid)
    return st.start_time if st is not None else None


def ensure_schema(db: MetadataDB) -> None:
    db.ensure_schema("leases", 1, _SCHEMA)


class Lease:
    def __init__(self, db: MetadataDB, lease_id: str):
        self.db = db
        self.id = lease_id

    def add(self, kind: str, ref: str) -> None:
        """Hold ``ref`` (kind "content" or "snapshot"); call before writing or reusing it."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO lease_resources (lease_id, kind, ref) VALUES (?,?,?)",
                         (self.id, kind, ref))


@contextmanager
def lease(db: MetadataDB, ttl: float = 24 * 3600) -> Iterator[Lease]:
    ensure_schema(db)
    lid = os.urandom(16).hex()  # not uuid: its import (platform, _uuid) costs every `run` ~7 ms
    now = time.time()
    pid = os.getpid()
    with db.transaction() as conn:
        conn.execute("INSERT INTO leases (id, created, expires, pid, pid_start) VALUES (?,?,?,?,?)",
                     (lid, now, now + ttl, pid, _start_time(pid)))
    try:
        yield Lease(db, lid)
    finally:
        with db.transaction() as conn:
            conn.execute("DELETE FROM lease_resources WHERE lease_id = ?", (lid,))
            conn.execute("DELETE FROM leases WHERE id = ?", (lid,))


def held_resources(db: MetadataDB) -> set[tuple[str, str]]:
    """(kind, ref) held by live leases; expired and orphaned leases are deleted on the way.
    Call inside the GC's write transaction."""
    ensure_schema(db)
    now = time.time()
    held: set[tuple[str, str]] = set()
    with db.transaction() as conn:
        for row in conn.execute("SELECT id, expires, pid, pid_start FROM leases").fetchall():
            alive = row["expires"] > now and (row["pid"] is None or _start_time(row["pid"]) == row["pid_start"])
            if not alive:
                conn.execute("DELETE FROM lease_resources WHERE lease_id = ?", (row["id"],))
                conn.execute("DELETE FROM leases WHERE id = ?", (row["id"],))
                continue
            for r in conn.execute("SELECT kind, ref FROM lease_resources WHERE lease_id = ?", (row["id"],)):
                held.add((r["kind"], r["ref"]))
    return held
