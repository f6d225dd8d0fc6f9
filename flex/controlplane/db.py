"""Engines, sessions and schema migrations for SQLite (default) and PostgreSQL (``--db postgresql://...``).

SQLite: WAL, a busy timeout, and two engines on one file: readers start deferred transactions, writers
``BEGIN IMMEDIATE`` so that two writers queue instead of failing with a stale snapshot.
PostgreSQL (psycopg 3): one engine; migrations run under an advisory lock so replicas may start together.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from flex.controlplane.config import Settings
from flex.errors import Unavailable
from flex.sqlite import enable_wal

__all__ = ["Database", "libpq_url", "redact_url", "sqlalchemy_url"]

_MIGRATION_LOCK = 0x666C6578  # "flex"


def redact_url(url: str) -> str:
    """The URL fit for a log line or an error: a password (``user:pw@`` or ``?password=``) becomes ``***``."""
    out = re.sub(r"^([a-z][a-z0-9+.-]*://[^/?#@:]*:)[^/?#]*@", r"\1***@", url, flags=re.IGNORECASE)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", out, flags=re.IGNORECASE)


def _scrub(text: str, url: str) -> str:
    """A driver's message with any password of ``url`` in it replaced (drivers may echo the DSN)."""
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> list[str]:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        found = []
    found += re.findall(r"[?&]password=([^&#]*)", url, flags=re.IGNORECASE)
    return [p for s in found for p in {s, unquote(s)} if p]


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def libpq_url(url: str) -> str:
    """The URL psycopg itself takes (for LISTEN): no SQLAlchemy driver suffix."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://"):]


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own handling skips DDL)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        enable_wal(cur, 30)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclass
class Database:
    """The engines of one process. ``read()`` and ``write()`` give sessions that commit on success."""

    settings: Settings
    engine: Engine
    write_engine: Engine
    _loop_reader: sqlite3.Connection | None = None

    def loop_reader(self) -> sqlite3.Connection:
        """SQLite only: a read-only sqlite3 connection for single-statement reads on the event loop thread
        (autocommit: each SELECT sees one consistent snapshot, no BEGIN/ROLLBACK round)."""
        if self._loop_reader is None:
            path = sqlalchemy_url(self.settings.database_url).removeprefix("sqlite:///")
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
            conn.execute("PRAGMA busy_timeout=2000")  # WAL readers wait only while a database is recovered
            conn.execute("PRAGMA query_only=ON")
            self._loop_reader = conn
        return self._loop_reader

    @classmethod
    def open(cls, settings: Settings) -> Database:
        url = sqlalchemy_url(settings.database_url)
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            return cls(settings, _sqlite_engine(url, immediate=False), _sqlite_engine(url, immediate=True))
        try:
            engine = create_engine(url, pool_size=settings.pool_size, max_overflow=10, pool_pre_ping=True)
        except Exception as err:
            url = settings.database_url
            raise Unavailable(f"cannot use database {redact_url(url)!r}: {_scrub(str(err), url)}") from None
        return cls(settings, engine, engine)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _sessions(self, engine: Engine) -> sessionmaker[Session]:
        return sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions(self.engine)() as s, s.begin():
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._sessions(self.write_engine)() as s, s.begin():
            yield s

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration (alembic, shipped in this package)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self.write_engine.begin() as conn:
                if self.is_postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as err:
            if type(err).__module__.startswith(("sqlalchemy", "psycopg")):
                url = self.settings.database_url
                # from None: a traceback (--debug) of the driver's exception could show the DSN
                raise Unavailable(f"cannot migrate database {redact_url(url)!r}: {_scrub(str(err), url)}",
                                  hint="check --db and that the database server is running") from None
            raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._loop_reader is not None:
            self._loop_reader.close()
            self._loop_reader = None
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()
