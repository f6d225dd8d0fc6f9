"""A container's id by name, read from the runtime DB without opening the stores (sqlite3 alone, read-only):
for a caller that must answer in milliseconds, `flex up`'s lean path. Creates, locks and reconciles nothing
(``Containers.get`` does); None for anything but exactly one recorded container. Imports nothing from flex.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

__all__ = ["recorded_container_id"]


def recorded_container_id(db_path: Path, name: str) -> str | None:
    """The id of the container recorded as ``name`` in ``db_path`` (FLEX_HOME/runtime.db), or None."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT id FROM containers WHERE name = ?", (name,)).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return str(rows[0][0]) if len(rows) == 1 else None
