"""The root runner's pool of host id ranges: one distinct 65536-id range per container.

Ranges live in the runtime DB (table ``id_ranges``), are taken in the same transaction that records the
container, never overlap any range in /etc/subuid or /etc/subgid, and are released when the container is
removed (or by GC when the container record is gone). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

from flex.errors import Unavailable
from flex.runtime.idmap import RANGE_SIZE, all_subid_ranges
from flex.runtime.metadata import MetadataDB

__all__ = ["IdPool"]

# Above every range useradd hands out by default (100000 + n*65536 for the first ~14000 users).
POOL_START = 1 << 30
POOL_END = (1 << 32) - 2 * RANGE_SIZE  # 2^32-1 is the invalid id


class IdPool:
    """Allocate and release 65536-id ranges, recorded in the runtime DB."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        db.ensure_schema("idpool", 1, [
            "CREATE TABLE IF NOT EXISTS id_ranges (base INTEGER PRIMARY KEY, owner TEXT NOT NULL UNIQUE)",
        ])

    def allocate(self, owner: str) -> int:
        """The base of a free range for ``owner`` (the same one again if it already has one)."""
        taken_sub = all_subid_ranges()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT base FROM id_ranges WHERE owner = ?", (owner,)).fetchone()
            if row is not None:
                return int(row["base"])
            used = {int(r["base"]) for r in conn.execute("SELECT base FROM id_ranges")}
            base = POOL_START
            while base < POOL_END:
                clash = any(s.start < base + RANGE_SIZE and base < s.end for s in taken_sub)
                if base not in used and not clash:
                    conn.execute("INSERT INTO id_ranges (base, owner) VALUES (?, ?)", (base, owner))
                    return base
                base += RANGE_SIZE
        raise Unavailable("no free id range left in the container id pool")

    def release(self, owner: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM id_ranges WHERE owner = ?", (owner,))

    def owners(self) -> set[str]:
        return {str(r["owner"]) for r in self.db.query("SELECT owner FROM id_ranges")}
