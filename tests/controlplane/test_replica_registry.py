"""Replicas (issue 15): where each one is reached and which runner tunnels it holds, on SQLite and PostgreSQL;
and the replica link, which only another replica of this control plane may open. The streams forwarded over
it, end to end, are in tests/runner/test_replicas_access.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flex.api import set_condition
from flex.api.tunnel import CLOSE, OPEN, WINDOW, decode, encode
from flex.controlplane.config import Settings
from flex.controlplane.db import Database
from flex.controlplane.secret_key import SecretKey
from flex.controlplane.tunnel.peers import link_url
from flex.controlplane.tunnel.registry import Registry
from flex.controlplane.tunnel.replica_auth import ReplicaKey
from tests.controlplane.conftest import running_app, serve


@pytest.fixture
def db(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    database = Database.open(make_settings())
    database.migrate()
    yield database
    database.dispose()


def test_a_tunnel_is_found_through_the_replica_holding_it(db: Database) -> None:
    a, b = Registry(db, "http://10.0.0.1:8080"), Registry(db, "http://10.0.0.2:8080")
    a.beat()
    b.beat()
    assert b.holder("run_1") is None
    a.claim("run_1")
    assert (b.holder("run_1"), a.holder("run_1")) == ("http://10.0.0.1:8080", None)  # not itself
    # the runner moves to B before A notices its old tunnel closed: A's late release keeps B's claim
    b.claim("run_1")
    a.release("run_1")
    assert a.holder("run_1") == "http://10.0.0.2:8080"
    b.release("run_1")
    assert a.holder("run_1") is None
    # a heartbeat records a held tunnel whose row is missing, and never takes one that moved on
    a.beat(held=["run_2"])
    assert b.holder("run_2") == "http://10.0.0.1:8080"
    b.claim("run_2")
    a.beat(held=["run_2"])
    assert a.holder("run_2") == "http://10.0.0.2:8080"
    b.retire()  # a clean stop: gone at once
    assert a.holder("run_2") is None


def test_a_heartbeat_drops_the_row_of_a_tunnel_no_longer_held(db: Database) -> None:
    a = Registry(db, "http://10.0.0.1:8080", heartbeat=0.1)
    b = Registry(db, "http://10.0.0.2:8080", heartbeat=0.1)
    a.beat()
    a.claim("run_1")  # its tunnel then closed, and the release failed (the database was away)
    a.claim("run_2")
    b.beat()
    a.beat(held=["run_2"])  # within a heartbeat of the claim: it may be attaching right now, kept
    assert b.holder("run_1") == "http://10.0.0.1:8080"
    time.sleep(0.15)
    a.beat(held=["run_2"])
    b.beat()
    assert (b.holder("run_1"), b.holder("run_2")) == (None, "http://10.0.0.1:8080")


def test_a_dead_replicas_tunnels_are_held_by_no_one(db: Database) -> None:
    dead = Registry(db, "http://10.0.0.1:8080", heartbeat=0.1)  # expiry: 3 heartbeats
    alive = Registry(db, "http://10.0.0.2:8080", heartbeat=0.1)
    dead.beat()
    dead.claim("run_1")
    assert alive.holder("run_1") == "http://10.0.0.1:8080"
    time.sleep(0.4)  # no beat: killed
    assert alive.holder("run_1") is None
    alive.beat()
    alive.claim("run_1")  # the runner reconnects to a live replica
    assert dead.holder("run_1") == "http://10.0.0.2:8080"


def test_the_advertised_url_defaults_to_the_listen_address(tmp_path: Path) -> None:
    assert Settings(server_dir=tmp_path, listen="0.0.0.0:9000").advertise == "http://127.0.0.1:9000"
    assert Settings(server_dir=tmp_path, listen="10.1.2.3:80").advertise == "http://10.1.2.3:80"
    assert Settings(server_dir=tmp_path, advertise_url="https://cp-1.internal:8443/").advertise == \
        "https://cp-1.internal:8443"


async def test_only_a_replica_may_open_the_link(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async with running_app(make_settings()) as api, serve(api):
        assert api.base_url is not None
        url = link_url(api.base_url)
        ours = ReplicaKey(SecretKey.ensure(api.settings.secret_key_path))
        other = ReplicaKey(SecretKey.ensure(tmp_path / "another-key"))
        stale = ours.authorization("rep_x").replace("FlexReplica ", "FlexReplica 1", 1)  # a time long ago
        for header in ({}, {"Authorization": other.authorization("rep_x")}, {"Authorization": stale},
                       {"Authorization": f"Bearer {api.admin_token}"}):  # not even an admin's token
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=header, proxy=None):
                    pass
            assert refused.value.response.status_code == 401, header
        # a replica's link: a stream for a runner whose tunnel is not here ends with that error
        async with connect(url, additional_headers={"Authorization": ours.authorization("rep_x")},
                           proxy=None) as ws:
            await ws.send(encode(OPEN, 1, b'{"kind": "exec", "runner": "run_nope", "env": "env_x"}'))
            kind, sid, payload = decode(await ws.recv())  # type: ignore[arg-type]
            if kind == WINDOW:  # the stream's window grows before the holder looks for the runner
                kind, sid, payload = decode(await ws.recv())  # type: ignore[arg-type]
            assert (kind, sid) == (CLOSE, 1) and b"not connected" in payload
        paths = (await api.raw().get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/internal/")]


async def test_the_replica_holding_the_tunnel_decides_idleness(make_settings: Callable[..., Settings]) -> None:
    """Every stream of an environment passes through the replica holding its runner's tunnel (forwarded ones
    too), so another replica, which saw none of them, must not stop it as idle."""
    async with running_app(make_settings()) as api:
        rid, runner = await api.runner("r1")
        env = await api.admin.create_environment("e1", {"source": {"git": "https://host/org/repo.git"},
                                                        "idleTimeout": 1})
        holder = Registry(api.app.state.cp.db, "http://10.0.0.9:8080")
        await asyncio.to_thread(holder.beat)
        await asyncio.to_thread(holder.claim, rid)  # before it runs: no sweep may see it running unheld
        status = env.status.model_copy(deep=True)
        status.phase, status.observed_generation = "running", env.metadata.generation
        set_condition(status, "Ready", True, reason="Ready", message="", generation=env.metadata.generation)
        await runner.update_status(env.metadata.id, status)
        await asyncio.sleep(3.5)  # three idle timeouts: the sweep ran, and left it to the holder
        assert (await api.admin.get_environment("e1")).spec.desired_phase == "running"
        await asyncio.to_thread(holder.retire)  # no one else holds it now: this replica decides
        deadline = time.monotonic() + 10
        while (await api.admin.get_environment("e1")).spec.desired_phase == "running":
            assert time.monotonic() < deadline, "never stopped once no other replica held the tunnel"
            await asyncio.sleep(0.2)


async def test_hooks_still_running_are_not_idleness(make_settings: Callable[..., Settings]) -> None:
    """The idle clock starts at Ready: a container whose postCreateCommand runs longer than idleTimeout is
    not stopped in the middle of it."""
    async with running_app(make_settings()) as api:
        _, runner = await api.runner("r1")
        env = await api.admin.create_environment("e1", {"source": {"git": "https://host/org/repo.git"},
                                                        "idleTimeout": 1})
        status = env.status.model_copy(deep=True)
        status.phase, status.observed_generation = "running", env.metadata.generation
        set_condition(status, "Ready", False, reason="PostCreateCommand", message="running postCreateCommand",
                      generation=env.metadata.generation)
        await runner.update_status(env.metadata.id, status)
        await asyncio.sleep(3.5)  # three idle timeouts while the hook runs
        assert (await api.admin.get_environment("e1")).spec.desired_phase == "running"
        set_condition(status, "Ready", True, reason="Ready", message="", generation=env.metadata.generation)
        await runner.update_status(env.metadata.id, status)
        deadline = time.monotonic() + 10
        while (await api.admin.get_environment("e1")).spec.desired_phase == "running":
            assert time.monotonic() < deadline, "never stopped once Ready and unused"
            await asyncio.sleep(0.2)
