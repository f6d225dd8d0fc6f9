"""The root runner's pool of host id ranges: one distinct 65536-id range per container.

Ranges live in the runtime DB (table ``id_ranges``), are taken in the same transaction that records the
container, never overlap any range in /etc/subuid or /etc/subgid, and are released when the container is
removed (or by GC when the container record is gone).

Several FLEX_HOMEs on one machine (a runner, tests, a developer's own) each have their own DB, so a
range is also *claimed* machine-wide: a symlink ``CLAIMS/<base> -> <the container's directory>``, made
with symlink(2), which fails if the name exists. A claim whose target directory is gone, and which is
older than a grace period (creation makes the directory just after the claim), is stale: its container
was removed without release, or its creation crashed; it may be taken over. Making, taking over and
dropping a claim happen under an exclusive lock on ``CLAIMS/.lock``: a takeover reads, unlinks and
re-links the name, and without the lock a second home could unlink the first one's fresh claim and make
its own, leaving both holding the range. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from flex.errors import Unavailable
from flex.runtime.base.lock import file_lock
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.userns.idmap import RANGE_SIZE, all_subid_ranges

__all__ = ["IdPool"]

# Above every range useradd hands out by default (100000 + n*65536 for the first ~14000 users).
POOL_START = 1 << 30
POOL_END = (1 << 32) - 2 * RANGE_SIZE  # 2^32-1 is the invalid id
_GRACE = 300.0  # a claim younger than this may point at a directory its creator has yet to make
CLAIMS = Path(os.environ.get("FLEX_ID_CLAIMS", "/var/lib/flex-id-claims"))


def _claim(base: int, target: Path) -> bool:
    with file_lock(CLAIMS / ".lock"):
        return _claim_locked(CLAIMS / str(base), target)


def _claim_locked(path: Path, target: Path) -> bool:
    for _ in range(2):
        try:
            os.symlink(target, path)
            return True
        except FileExistsError:
            try:
                current = os.readlink(path)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if current == str(target):
                return True
            try:
                age = time.time() - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if os.path.isdir(current) or age < _GRACE:
                return False  # a container of another FLEX_HOME holds it (or is being created)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # stale: its container is gone
    return False


def _unclaim(base: int, target: str | None) -> None:
    if target is None:
        return
    path = CLAIMS / str(base)
    with contextlib.suppress(OSError), file_lock(CLAIMS / ".lock"):
        if os.readlink(path) == target:
            os.unlink(path)


class IdPool:
    """Allocate and release 65536-id ranges, recorded in the runtime DB and claimed machine-wide."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db
        db.ensure_schema("idpool", 2, [
            "CREATE TABLE IF NOT EXISTS id_ranges (base INTEGER PRIMARY KEY, owner TEXT NOT NULL UNIQUE)",
            "ALTER TABLE id_ranges ADD COLUMN claim TEXT",
        ])

    def allocate(self, owner: str, claim: Path) -> int:
        """The base of a free range for ``owner`` (the same one again if it already has one); ``claim``
        is the owner's directory, which must exist while the range is in use."""
        taken_sub = all_subid_ranges()
        CLAIMS.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT base FROM id_ranges WHERE owner = ?", (owner,)).fetchone()
            if row is not None:
                return int(row["base"])
            used = {int(r["base"]) for r in conn.execute("SELECT base FROM id_ranges")}
            base = POOL_START
            while base < POOL_END:
                clash = any(s.start < base + RANGE_SIZE and base < s.end for s in taken_sub)
                if base not in used and not clash and _claim(base, claim):
                    conn.execute("INSERT INTO id_ranges (base, owner, claim) VALUES (?, ?, ?)",
                                 (base, owner, str(claim)))
                    return base
                base += RANGE_SIZE
        raise Unavailable("no free id range left in the container id pool")

    def release(self, owner: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT base, claim FROM id_ranges WHERE owner = ?", (owner,)).fetchone()
            conn.execute("DELETE FROM id_ranges WHERE owner = ?", (owner,))
        if row is not None:
            _unclaim(int(row["base"]), row["claim"])

    def owners(self) -> set[str]:
        return {str(r["owner"]) for r in self.db.query("SELECT owner FROM id_ranges")}
