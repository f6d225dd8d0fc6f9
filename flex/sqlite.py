"""SQLite connections as flex opens them. Shared by the runtime's and the control plane's databases.

Processes opening a new database at once: switching it to WAL can fail with "database is locked" at once,
without SQLite calling its busy handler (measured: 4 of 160 processes, 8 at a time). So the switch is
retried within the same timeout the busy handler would have used.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

__all__ = ["enable_wal"]


def enable_wal(conn: Any, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL`` on a DB-API connection or cursor, retried while the file is locked."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
