"""The layer cache: step key → the build state after that step, held by a lease so GC keeps it.

A key chains its parent's key with the step's instruction after expansion, the build args it can see
and the content of what it reads (COPY sources, bind-mounted folders): change any and the key, and
every key after it, changes. An entry is written only after its layer is a committed snapshot and a
blob in the content store, in the same transaction as the lease's hold on both: a build killed at any
point leaves no entry that points at nothing, and the next build goes on from the last entry written.
Component "build_cache" in the runtime database; the lease ``build-cache`` has no owner and no expiry
(``flex image prune --build-cache`` drops it).
"""

from __future__ import annotations

import json
import time
from typing import Any

from flex.runtime.base.metadata import MetadataDB
from flex.runtime.leases import leases

__all__ = ["CACHE_LEASE", "BuildCache"]

CACHE_LEASE = "build-cache"
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS build_cache (
        key TEXT PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL, used REAL NOT NULL)""",
]


class BuildCache:
    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        leases.ensure_schema(db)
        db.ensure_schema("build_cache", 1, _SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.query_one("SELECT state FROM build_cache WHERE key = ?", (key,))
        return json.loads(row["state"]) if row is not None else None

    def put(self, key: str, state: dict[str, Any], resources: list[tuple[str, str]]) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO leases (id, created, expires, pid, pid_start) VALUES (?,?,?,NULL,NULL)",
                         (CACHE_LEASE, now, now + 100 * 365 * 86400))
            for kind, ref in resources:
                conn.execute("INSERT OR IGNORE INTO lease_resources (lease_id, kind, ref) VALUES (?,?,?)",
                             (CACHE_LEASE, kind, ref))
            conn.execute("INSERT OR REPLACE INTO build_cache (key, state, created, used) VALUES (?,?,?,?)",
                         (key, json.dumps(state, sort_keys=True), now, now))

    def hold(self, resources: list[tuple[str, str]]) -> None:
        """Hold more resources under the cache's lease (an untagged image's manifest and config)."""
        self.put_resources(resources)

    def put_resources(self, resources: list[tuple[str, str]]) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO leases (id, created, expires, pid, pid_start) VALUES (?,?,?,NULL,NULL)",
                         (CACHE_LEASE, now, now + 100 * 365 * 86400))
            for kind, ref in resources:
                conn.execute("INSERT OR IGNORE INTO lease_resources (lease_id, kind, ref) VALUES (?,?,?)",
                             (CACHE_LEASE, kind, ref))

    def clear(self) -> int:
        """Forget every entry and let the lease go (``flex image prune --build-cache``); returns the count."""
        with self.db.transaction() as conn:
            n = conn.execute("SELECT COUNT(*) AS n FROM build_cache").fetchone()["n"]
            conn.execute("DELETE FROM build_cache")
            conn.execute("DELETE FROM lease_resources WHERE lease_id = ?", (CACHE_LEASE,))
            conn.execute("DELETE FROM leases WHERE id = ?", (CACHE_LEASE,))
        return int(n)
