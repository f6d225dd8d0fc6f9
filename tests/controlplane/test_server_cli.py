"""`flex server` as a person runs it: a real process, the admin token file, the sync client, bad flags;
and the migrated schema matching the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flex.client import FlexClient
from flex.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable
from tests.conftest import run_flex
from tests.controlplane.conftest import Postgres, free_port

GIT = "https://host/org/repo.git"


def _start(home: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "FLEX_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{port}", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"flex server exited: {proc.communicate()[1]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("flex server did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    proc, url = _start(tmp_path / "home")
    try:
        yield url, tmp_path / "home"
    finally:
        _stop(proc)


def test_server_writes_the_admin_token_and_serves_the_sync_client(server: tuple[str, Path]) -> None:
    url, home = server
    token_file = home / "server" / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/openapi.json").json()["paths"]["/api/v1/environments"]
    with FlexClient(url, token_file.read_text().strip()) as admin:
        bob_token = admin.create_user("bob").token
        with FlexClient(url, bob_token) as bob:
            env = bob.create_environment("e1", git=GIT, labels={"team": "a"})
            assert env.metadata.generation == 1 and env.metadata.owner == "bob"
            stopped = bob.stop_environment("e1", resource_version=env.metadata.resource_version)
            assert stopped.metadata.generation == 2
            with pytest.raises(Conflict):
                bob.start_environment("e1", resource_version=env.metadata.resource_version)
            with pytest.raises(NotFound):
                bob.get_environment("nope")
            with pytest.raises(InvalidArgument):
                bob.create_environment("Bad_Name", {"source": {"git": GIT}})
            with pytest.raises(PermissionDenied):
                bob.create_join_token()
            assert [e.metadata.name for e in bob.iter_environments(limit=1)] == ["e1"]
            # a watch from a version replays what followed it
            events = list(bob.watch_environments(env.metadata.resource_version, timeout=1.0))
            assert [(e.type, e.object.spec.desired_phase) for e in events] == [("MODIFIED", "stopped")]
    with FlexClient(url, "flexu_wrong") as stranger, pytest.raises(Unauthenticated):
        stranger.list_environments()


def test_an_unreachable_server_is_unavailable() -> None:
    with FlexClient(f"http://127.0.0.1:{free_port()}", "t", timeout=3) as c, pytest.raises(Unavailable):
        c.list_environments()


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    r = run_flex("server", "--listen", "nowhere", env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 2 and "--listen" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    r = run_flex("server", "--db", f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                 "--listen", f"127.0.0.1:{free_port()}", env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 6, r.stderr
    assert r.stderr.startswith("error: cannot migrate database") and "Traceback" not in r.stderr
    assert "hint:" in r.stderr


def test_server_help_is_fast_to_reach() -> None:
    r = run_flex("server", "--help")
    assert r.code == 0 and "--db" in r.stdout and "--listen" in r.stdout


@pytest.mark.postgres
def test_two_server_processes_on_postgres(tmp_path: Path, postgres: Postgres) -> None:
    """Two real `flex server` replicas on one PostgreSQL database: one admin, shared state, shared watches."""
    with postgres.database() as db:
        one, url1 = _start(tmp_path / "one", "--db", db)
        try:
            two, url2 = _start(tmp_path / "two", "--db", db)
            try:
                assert (tmp_path / "one" / "server" / "admin-token").exists()
                assert not (tmp_path / "two" / "server" / "admin-token").exists()
                token = (tmp_path / "one" / "server" / "admin-token").read_text().strip()
                with FlexClient(url1, token) as a, FlexClient(url2, token) as b:
                    rv = b.list_environments().metadata.resource_version
                    a.create_environment("e1", git=GIT)
                    events = list(b.watch_environments(rv, timeout=3.0))
                    assert [(e.type, e.object.metadata.name) for e in events] == [("ADDED", "e1")]
            finally:
                _stop(two)
        finally:
            _stop(one)


def test_migrations_match_the_models(tmp_path: Path, backend: str | None) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from flex.controlplane.config import Settings
    from flex.controlplane.db import Database
    from flex.controlplane.models import metadata

    db = Database.open(Settings(server_dir=tmp_path, db_url=backend))
    try:
        db.migrate()
        db.migrate()  # a second start changes nothing
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        from sqlalchemy import text

        with pytest.raises(Exception, match="append-only"), db.write() as s:
            s.execute(text("INSERT INTO audit (time, actor, action, resource, details) "
                           "VALUES (CURRENT_TIMESTAMP, 'a', 'b', 'c', '{}')"))
            s.execute(text("DELETE FROM audit"))
    finally:
        db.dispose()


def test_ctrl_c_with_a_watch_open_ends_the_watch_and_stops_at_once(tmp_path: Path) -> None:
    """A watch stream never ends by itself: the server ends it when it stops, rather than waiting out its
    graceful-shutdown timeout (3 s) and then cutting it mid-response."""
    import threading

    proc, url = _start(tmp_path / "home")
    token = (tmp_path / "home" / "server" / "admin-token").read_text().strip()
    outcome: list[str] = []
    opened = threading.Event()

    def watch() -> None:
        try:
            with httpx.stream("GET", url + "/api/v1/environments", params={"watch": "true"},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
                opened.set()
                for _ in r.iter_lines():
                    pass
            outcome.append("ended")
        except httpx.HTTPError as err:
            outcome.append(f"broken: {err!r}")
        finally:
            opened.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert opened.wait(30)
    started = time.monotonic()
    stderr = _stop(proc)
    took = time.monotonic() - started
    reader.join(10)
    assert proc.returncode == 0, stderr
    assert outcome == ["ended"], stderr
    assert took < 2.5, f"stopping took {took:.1f} s"
    assert "Traceback" not in stderr and "timeout graceful shutdown exceeded" not in stderr, stderr
