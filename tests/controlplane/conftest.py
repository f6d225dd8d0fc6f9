"""Fixtures of the control-plane suite: a real PostgreSQL 15 server, and an app per test on SQLite or on it.

Every API test runs twice (``backend`` = sqlite, postgres). SQLite: a file in tmp_path. PostgreSQL: Debian's
server, started once per session on 127.0.0.1 with a socket in a temp dir, and a fresh database per test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flex.client import AsyncFlexClient
from flex.controlplane.app import create_app
from flex.controlplane.config import Settings
from tests.conftest import missing

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    port: int
    root: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = "t_" + uuid.uuid4().hex[:12]
        self.admin_sql(f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        missing("PostgreSQL 15 is not installed (installer/install.sh --dev installs it)")
    if os.geteuid() != 0:
        missing("starting PostgreSQL as the postgres user needs root")
    root = Path(tempfile.mkdtemp(prefix="flex-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-N"], check=True, capture_output=True, timeout=120)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=300"
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                    "-l", str(root / "log"), "-o", opts, "start"], check=True, capture_output=True, timeout=90)
    try:
        yield Postgres(port, root)
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL of this test's control plane: None means the default SQLite file."""
    if request.param == "sqlite":
        yield None
        return
    pg: Postgres = request.getfixturevalue("postgres")
    with pg.database() as url:
        yield url


@dataclass
class Api:
    """One running app and ways to talk to it as different people."""

    app: Any
    settings: Settings
    admin_token: str
    base_url: str | None = None  # set by serve(): a real uvicorn on 127.0.0.1 (ASGITransport cannot stream)
    _clients: list[AsyncFlexClient] = field(default_factory=list)
    _raw: list[httpx.AsyncClient] = field(default_factory=list)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def client(self, token: str | None) -> AsyncFlexClient:
        if self.base_url:
            c = AsyncFlexClient(self.base_url, token)
        else:
            c = AsyncFlexClient("http://flex.test", token, transport=self.transport())
        self._clients.append(c)
        return c

    def raw(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.base_url:
            c = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)
        else:
            c = httpx.AsyncClient(base_url="http://flex.test", headers=headers, transport=self.transport(), timeout=60)
        self._raw.append(c)
        return c

    @property
    def admin(self) -> AsyncFlexClient:
        return self.client(self.admin_token)

    async def user(self, name: str) -> AsyncFlexClient:
        created = await self.admin.create_user(name)
        return self.client(created.token)

    async def runner(self, name: str, cpus: float = 8, memory: int = 32 * 2**30, disk: int = 200 * 2**30,
                     labels: dict[str, str] | None = None, kind: str = "vm", owner: str | None = None,
                     grant: dict[str, Any] | None = None, **extra: Any) -> tuple[str, AsyncFlexClient]:
        """Join a runner with a token the admin made, granting it ``labels`` (and ``grant``, e.g. users)."""
        join = await self.admin.create_join_token({"labels": labels or {}, "owner": owner, **(grant or {})})
        joined = await self.client(None).join(join.token, name, kind,
                                              {"cpus": cpus, "memory": memory, "disk": disk}, labels, **extra)
        return joined.id, self.client(joined.credential)

    async def watching(self, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until this app has ``count`` watch streams subscribed (a slow machine may take a while)."""
        import asyncio

        hub = self.app.state.cp.hub
        deadline = asyncio.get_running_loop().time() + timeout
        while len(hub.subscribers) < count:
            assert asyncio.get_running_loop().time() < deadline, "the watch never subscribed"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()
        for r in self._raw:
            await r.aclose()


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token_file = settings.admin_token_file  # a second replica on one database creates no admin
        api = Api(app, settings, token_file.read_text().strip() if token_file.exists() else "")
        try:
            yield api
        finally:
            await api.close()


@contextlib.asynccontextmanager
async def serve(api: Api) -> AsyncIterator[Api]:
    """Serve an app whose lifespan already runs through a real uvicorn on 127.0.0.1, for streaming watches."""
    import asyncio

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    api.base_url = f"http://127.0.0.1:{port}"
    try:
        yield api
    finally:
        await api.close()
        server.should_exit = True
        await task


@pytest.fixture
def make_settings(tmp_path: Path, backend: str | None) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"server_dir": tmp_path / "server", "db_url": backend, "sweep_interval": 0.2,
                                "heartbeat_timeout": 30.0, "watch_keepalive": 1.0, "pool_size": 5}
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
async def api(make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    async with running_app(make_settings()) as api:
        yield api


@pytest.fixture
async def live(make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """Like ``api``, but over real HTTP, so watches stream as they would in production."""
    async with running_app(make_settings()) as api, serve(api):
        yield api
