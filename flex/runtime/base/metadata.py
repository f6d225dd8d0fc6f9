"""The runtime's metadata database (SQLite): one file, FLEX_HOME/runtime.db, shared by every component.

Each component (content, images, snapshots, containers, id ranges, network leases, ...) owns its own
tables and declares them with ``db.ensure_schema(component, version, statements)``; a component's
statements for version N run once, in one transaction, when the recorded version is below N. Writers
use ``with db.transaction():`` (BEGIN IMMEDIATE), so two processes never interleave a multi-step change;
WAL mode lets readers go on meanwhile. A crash inside a transaction leaves nothing half-written.
The file is private (0600; SQLite gives its -wal and -shm files the same mode): it holds every
container's environment, and on a root runner FLEX_HOME is searchable by other users.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from flex.sqlite import enable_wal

__all__ = ["MetadataDB"]


class MetadataDB:
    """A thread-safe handle on the runtime database (one connection per thread)."""

    def __init__(self, path: Path, *, timeout: float = 30.0):
        self.path = path
        self._timeout = timeout
        self._local = threading.local()
        _make_private(path)
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            enable_wal(conn, self._timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._local.depth = 0
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); nested uses join the outer one."""
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute(sql, params).fetchone()
        return row

    def ensure_schema(self, component: str, version: int, statements: Sequence[str]) -> None:
        """Create or upgrade ``component``'s tables to ``version``; ``statements`` are idempotent DDL
        (CREATE TABLE IF NOT EXISTS ...). Bump ``version`` when they change."""
        row = self.query_one("SELECT version FROM schema_versions WHERE component = ?", (component,))
        if row is not None and row["version"] >= version:
            return
        with self.transaction() as conn:
            row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
            if row is not None and row["version"] >= version:
                return
            for stmt in statements:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version),
            )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use the umask), and take group and
    other bits away from one made by an older version, with its -wal and -shm files. An existing file is
    never opened here: closing any descriptor of it would drop the POSIX locks this process's SQLite
    connections hold on it (fcntl locks are per process), and another process could then reset the WAL
    under them ("disk I/O error")."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except FileNotFoundError:
            pass
