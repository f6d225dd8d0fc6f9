"""The runtime database opened by many processes at once, as several `flex runtime` commands do."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Imports first, then waits for a shared start time: the opens then race as closely as they can.
_OPEN = """
import sys, time
from pathlib import Path
from flex.runtime.base.metadata import MetadataDB
start = float(sys.argv[2])
while time.time() < start:
    pass
db = MetadataDB(Path(sys.argv[1]))
with db.transaction() as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS t (who TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (sys.argv[3],))
"""


def test_processes_opening_a_new_database_at_once_all_get_in(tmp_path: Path) -> None:
    # Before the fix, switching a new database to WAL failed with "database is locked" in about one
    # process in 40 here; 80 processes make a regression show almost always.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(10):
        path = tmp_path / f"r{round_}.db"
        start = time.time() + 0.3
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(path), str(start), f"p{n}"], env=env,
                                  stderr=subprocess.PIPE, text=True) for n in range(8)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 8, [e.strip().splitlines()[-1:] for e in errors if e]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert sorted(r[0] for r in conn.execute("SELECT who FROM t")) == [f"p{n}" for n in range(8)]
        conn.close()


def test_the_database_is_private_new_or_made_by_an_older_version(tmp_path: Path) -> None:
    # It holds every container's environment: before the fix it was 0644 (the umask's), -wal and -shm too.
    from flex.runtime.base.metadata import MetadataDB

    old = os.umask(0o022)
    try:
        new = MetadataDB(tmp_path / "new.db")
        with new.transaction() as conn:
            conn.execute("CREATE TABLE t (x)")
        legacy = sqlite3.connect(tmp_path / "old.db")
        legacy.execute("PRAGMA journal_mode=WAL")
        legacy.execute("CREATE TABLE t (x)")
        legacy.commit()  # (left open: its -wal and -shm stay, 0644)
        assert (tmp_path / "old.db-wal").stat().st_mode & 0o777 == 0o644
        MetadataDB(tmp_path / "old.db")
        legacy.close()
    finally:
        os.umask(old)
    for name in ("new.db", "new.db-wal", "new.db-shm", "old.db", "old.db-wal", "old.db-shm"):
        if (tmp_path / name).exists():
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "new.db-wal").exists() or (tmp_path / "new.db-shm").exists()
