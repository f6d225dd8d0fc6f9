"""Watches over server-sent events: order, completeness, resume from a version, 410, isolation, replicas.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture), over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flex.api import WatchEvent
from flex.api.errors import Gone
from flex.client import AsyncFlexClient
from flex.controlplane.config import Settings
from flex.errors import Conflict
from tests.controlplane.conftest import Api, running_app, serve

GIT = "https://host/org/repo.git"


async def _collect(client: AsyncFlexClient, rv: int | None, until: Callable[[list[WatchEvent]], bool],
                   timeout: float = 30) -> list[WatchEvent]:
    got: list[WatchEvent] = []

    async def run() -> None:
        async for ev in client.watch_environments(rv, timeout=timeout):
            got.append(ev)
            if until(got):
                return

    await asyncio.wait_for(run(), timeout + 10)
    return got


async def test_watch_streams_every_change_in_order_with_the_whole_object(live: Api) -> None:
    c = live.admin
    start = (await c.list_environments()).metadata.resource_version
    watcher = asyncio.create_task(_collect(live.admin, start, lambda evs: evs[-1].type == "DELETED"))
    await live.watching()
    env = await c.create_environment("e1", git=GIT)
    await c.patch_environment("e1", {"metadata": {"labels": {"a": "b"}}})
    await c.stop_environment("e1")
    await c.delete_environment("e1")
    events = await watcher
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    assert all(e.object.metadata.id == env.metadata.id for e in events)
    rvs = [e.object.metadata.resource_version for e in events]
    assert rvs == sorted(set(rvs)) and rvs[0] == env.metadata.resource_version
    assert events[1].object.metadata.labels == {"a": "b"} and events[2].object.spec.desired_phase == "stopped"
    assert events[2].object.metadata.generation == 2
    # resuming from the middle replays exactly what came after, nothing twice
    replay = await _collect(live.admin, rvs[1], lambda evs: len(evs) == 2)
    assert [e.object.metadata.resource_version for e in replay] == rvs[2:]


async def test_watch_without_a_version_starts_now(live: Api) -> None:
    c = live.admin
    await c.create_environment("old", git=GIT)
    watcher = asyncio.create_task(_collect(live.admin, None, lambda evs: True))
    await live.watching()
    await c.create_environment("new", git=GIT)
    events = await watcher
    assert [(e.type, e.object.metadata.name) for e in events] == [("ADDED", "new")]


async def test_users_watch_only_their_own(live: Api) -> None:
    alice, bob = await live.user("alice"), await live.user("bob")
    start = (await bob.list_environments()).metadata.resource_version
    watcher = asyncio.create_task(_collect(bob, start, lambda evs: len(evs) == 1))
    await live.watching()
    await alice.create_environment("a1", git=GIT)
    await alice.stop_environment("a1")
    await bob.create_environment("b1", git=GIT)
    events = await watcher
    assert [(e.type, e.object.metadata.owner) for e in events] == [("ADDED", "bob")]


async def test_a_watch_from_a_compacted_version_is_410(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(event_retention=3, sweep_interval=0.1)) as api, serve(api):
        c = api.admin
        first = await c.create_environment("e1", git=GIT)
        for i in range(6):
            await c.patch_environment("e1", {"spec": {"env": {"N": str(i)}}})

        async def compacted() -> bool:
            r = await api.raw(api.admin_token).get("/api/v1/environments", params={
                "watch": "1", "resourceVersion": first.metadata.resource_version, "timeoutSeconds": 0.1})
            return r.status_code == 410

        deadline = asyncio.get_running_loop().time() + 20
        while not await compacted():
            assert asyncio.get_running_loop().time() < deadline, "the event log was never compacted"
            await asyncio.sleep(0.1)
        r = await api.raw(api.admin_token).get("/api/v1/environments", params={
            "watch": "1", "resourceVersion": first.metadata.resource_version})
        assert r.status_code == 410 and r.json()["kind"] == "Gone" and r.json()["hint"]
        with pytest.raises(Gone) as info:
            async for _ in c.watch_environments(first.metadata.resource_version):
                pass
        assert isinstance(info.value, Conflict) and info.value.exit_code == 4
        # the cure: list, then watch from the list's version
        listed = await c.list_environments()
        watcher = asyncio.create_task(_collect(api.admin, listed.metadata.resource_version, lambda evs: True))
        await api.watching()
        await c.stop_environment("e1")
        assert [e.type for e in await watcher] == ["MODIFIED"]


async def test_a_change_through_one_replica_reaches_a_watcher_on_another(
        make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    """Two control planes on one database: on PostgreSQL via LISTEN/NOTIFY, on SQLite by polling the log."""
    async with running_app(make_settings()) as one, serve(one):
        replica = make_settings(server_dir=tmp_path / "replica", db_url=one.settings.database_url)
        async with running_app(replica) as two, serve(two):
            assert two.app.state.created_admin is False
            two.admin_token = one.admin_token
            start = (await two.admin.list_environments()).metadata.resource_version
            watcher = asyncio.create_task(_collect(two.admin, start, lambda evs: len(evs) == 3))
            await two.watching()
            for name in ("a", "b", "c"):
                await one.admin.create_environment(name, git=GIT)
            events = await watcher
            assert [(e.type, e.object.metadata.name) for e in events] == [("ADDED", "a"), ("ADDED", "b"),
                                                                          ("ADDED", "c")]
            # and the version check holds across replicas too
            env = await two.admin.get_environment("a")
            await one.admin.stop_environment("a", resource_version=env.metadata.resource_version)
            with pytest.raises(Conflict):
                await two.admin.start_environment("a", resource_version=env.metadata.resource_version)


async def test_a_watcher_that_falls_behind_is_told_to_relist(make_settings: Callable[..., Settings]) -> None:
    """Events are never dropped silently: a watcher whose buffer overflows gets an ERROR (410) and the stream
    ends, so it lists again. Binding five waiting environments in one transaction overflows a buffer of 2."""
    async with running_app(make_settings(watch_queue=2)) as api, serve(api):
        c = api.admin
        for i in range(5):
            await c.create_environment(f"e{i}", git=GIT)
        start = (await c.list_environments()).metadata.resource_version
        got: list[WatchEvent] = []

        async def watch() -> None:
            async for ev in api.admin.watch_environments(start, timeout=30):
                got.append(ev)

        task = asyncio.create_task(watch())
        await api.watching()
        await api.runner("r1")  # binds all five at once
        with pytest.raises(Gone) as info:
            await asyncio.wait_for(task, 30)
        assert "behind" in info.value.message
        assert 0 < len(got) <= 2 and all(e.type == "MODIFIED" for e in got)
        # listing again shows every binding, and a new watch from there works
        listed = await c.list_environments()
        assert all(e.status.runner_id for e in listed.items)


async def test_last_event_id_resumes_a_stream(live: Api) -> None:
    c = live.admin
    first = await c.create_environment("e1", git=GIT)
    await c.stop_environment("e1")
    await c.start_environment("e1")
    raw = live.raw(live.admin_token)
    r = await raw.get("/api/v1/environments", params={"watch": "1", "timeoutSeconds": 1},
                      headers={"Last-Event-ID": str(first.metadata.resource_version)})
    ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
    assert len(ids) == 2 and ids == sorted(ids) and ids[0] > first.metadata.resource_version
