"""Runners: joining, scheduling (selector, capacity, least-loaded, sticky), status writes, teardown, offline.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flex.api import RunnerHeartbeat, set_condition
from flex.client import AsyncFlexClient
from flex.controlplane.config import Settings
from flex.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from tests.controlplane.conftest import Api, running_app

GIT = "https://host/org/repo.git"
GiB = 2**30


def _spec(cpus: float = 1, memory: int = 2 * GiB, disk: int = 10 * GiB, **extra: Any) -> dict[str, Any]:
    return {"source": {"git": GIT}, "resources": {"cpus": cpus, "memory": memory, "disk": disk}, **extra}


async def _eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_join_tokens_are_single_use_and_admin_only(api: Api) -> None:
    token = (await api.admin.create_join_token({"labels": {"zone": "*"}})).token
    anon = api.client(None)
    joined = await anon.join(token, "r1", "vm", {"cpus": 4, "memory": "16Gi", "disk": "100Gi"}, {"zone": "eu"})
    assert joined.id.startswith("run_") and joined.credential.startswith("flexr_")
    with pytest.raises(Unauthenticated):
        await anon.join(token, "r2", "vm", {"cpus": 4, "memory": 1, "disk": 1})
    bob = await api.user("bob")
    with pytest.raises(PermissionDenied):
        await bob.create_join_token()
    again = (await api.admin.create_join_token()).token
    with pytest.raises(AlreadyExists):
        await anon.join(again, "r1", "desktop", {"cpus": 1, "memory": 1, "disk": 1})
    runner = await api.client(joined.credential).get_runner(joined.id)
    assert runner.name == "r1" and runner.state == "ready" and runner.capacity.memory == 16 * GiB


async def test_scheduling_selector_capacity_least_loaded_and_sticky(api: Api) -> None:
    c = api.admin
    big, _ = await api.runner("big", cpus=8, memory=32 * GiB, labels={"zone": "eu"})
    small, _ = await api.runner("small", cpus=2, memory=8 * GiB, labels={"zone": "us"})
    e1 = await c.create_environment("e1", _spec(cpus=1))
    e2 = await c.create_environment("e2", _spec(cpus=1))
    e3 = await c.create_environment("e3", _spec(cpus=1))
    # least loaded first: e1 ties (name decides), e2 goes to the idle one, e3 to big (1/8 used < 1/2)
    assert (e1.status.runner_id, e2.status.runner_id, e3.status.runner_id) == (big, small, big)
    e4 = await c.create_environment("e4", _spec(cpus=1, runnerSelector={"zone": "us"}))
    assert e4.status.runner_id == small
    assert e4.status.condition("Scheduled").status == "True"  # type: ignore[union-attr]
    full = await c.create_environment("e5", _spec(cpus=1, runnerSelector={"flex.dev/kind": "vm", "zone": "us"}))
    cond = full.status.condition("Scheduled")
    assert full.status.runner_id is None and cond is not None
    assert (cond.status, cond.reason) == ("False", "InsufficientCapacity")
    nowhere = await c.create_environment("e7", _spec(runnerSelector={"zone": "mars"}))
    cond = nowhere.status.condition("Scheduled")
    assert nowhere.status.runner_id is None and cond is not None
    assert (cond.status, cond.reason) == ("False", "NoRunnerMatches") and "zone=mars" in cond.message
    huge = await c.create_environment("e6", _spec(cpus=16))
    cond = huge.status.condition("Scheduled")
    assert cond is not None and (cond.status, cond.reason) == ("False", "InsufficientCapacity")
    # a runner that fits joins: the waiting environment is bound
    bigger, _ = await api.runner("bigger", cpus=64, memory=256 * GiB, labels={"zone": "eu"})
    bound = await _eventually(lambda: _bound(c, "e6"))
    assert bound.status.runner_id == bigger
    assert bound.status.condition("Scheduled").status == "True"  # type: ignore[union-attr]
    # sticky: changing the spec does not move an environment
    moved = await c.patch_environment("e1", {"spec": {"resources": {"cpus": 2}}})
    assert moved.status.runner_id == big
    assert (await c.get_environment("e5")).status.runner_id is None  # "bigger" is in the wrong zone
    runners = {r["name"]: r for r in (await api.raw(api.admin_token).get("/api/v1/runners")).json()["items"]}
    assert runners["big"]["environments"] == 2 and runners["big"]["allocated"]["cpus"] == 3
    assert runners["small"]["allocated"]["cpus"] == 2


async def _bound(c: AsyncFlexClient, name: str) -> Any:
    env = await c.get_environment(name)
    return env if env.status.runner_id else None


async def test_only_the_bound_runner_writes_status(api: Api) -> None:
    c = api.admin
    rid, runner = await api.runner("r1")
    other_id, other = await api.runner("r2", cpus=1, memory=GiB, disk=GiB)  # too small: never chosen
    env = await c.create_environment("e1", _spec())
    assert env.status.runner_id == rid
    env_id = env.metadata.id
    status = env.status.model_copy(deep=True)
    status.phase = "running"
    status.observed_generation = env.metadata.generation
    set_condition(status, "Ready", True, reason="Running", generation=env.metadata.generation)
    # a user may not write status, not even the owner or an admin
    raw = api.raw(api.admin_token)
    r = await raw.put(f"/api/v1/environments/{env_id}/status", json=status.to_wire())
    assert r.status_code == 403 and r.json()["kind"] == "PermissionDenied"
    # another runner cannot even see it
    with pytest.raises(NotFound):
        await other.update_status(env_id, status)
    with pytest.raises(NotFound):
        await other.runner_environment(other_id, env_id)
    # a runner cannot act as another runner
    with pytest.raises(PermissionDenied):
        await other.runner_environments(rid)
    # a runner credential does not work on user endpoints
    with pytest.raises(PermissionDenied):
        await runner.list_environments()
    # the bound runner can, with If-Match
    written = await runner.update_status(env_id, status, resource_version=env.metadata.resource_version)
    assert written.status.phase == "running" and written.status.observed_generation == 1
    assert written.status.runner_id == rid and written.metadata.generation == 1
    assert written.status.condition("Scheduled") is not None  # server conditions survive a runner's write
    with pytest.raises(Conflict):
        await runner.update_status(env_id, status.model_copy(update={"phase": "failed"}),
                                   resource_version=env.metadata.resource_version)
    # spec change: generation moves, observedGeneration lags until the runner catches up
    stopped = await c.stop_environment("e1")
    assert stopped.metadata.generation == 2 and stopped.status.observed_generation == 1
    seen = await runner.runner_environment(rid, env_id)
    caught_up = seen.status.model_copy(update={"phase": "stopped", "observed_generation": 2})
    final = await runner.update_status(env_id, caught_up, resource_version=seen.metadata.resource_version)
    assert final.status.observed_generation == final.metadata.generation == 2
    with pytest.raises(InvalidArgument):
        await runner.update_status(env_id, caught_up.model_copy(update={"observed_generation": 9}))
    mine = await runner.runner_environments(rid)
    assert [e.metadata.id for e in mine.items] == [env_id]


async def test_delete_waits_for_the_runner_to_tear_down(api: Api) -> None:
    c = api.admin
    rid, runner = await api.runner("r1")
    env = await c.create_environment("e1", _spec())
    raw = api.raw(api.admin_token)
    r = await raw.delete("/api/v1/environments/e1")
    assert r.status_code == 202 and r.json()["metadata"]["deletionTimestamp"]
    still = await c.get_environment("e1")
    assert still.metadata.deleting
    with pytest.raises(Conflict):
        await c.start_environment("e1")
    bob = await api.user("bob")
    bob_env = await bob.create_environment("b1", _spec())
    with pytest.raises(FailedPrecondition):  # not being deleted: a runner cannot make it vanish
        await runner.confirm_teardown(rid, bob_env.metadata.id)
    await runner.confirm_teardown(rid, env.metadata.id)
    with pytest.raises(NotFound):
        await c.get_environment("e1")


async def test_silent_runner_goes_offline_and_comes_back(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(heartbeat_timeout=1.0, sweep_interval=0.2)) as api:
        c = api.admin
        rid, runner = await api.runner("r1")
        await c.create_environment("e1", _spec())

        async def bound_while_alive() -> Any:  # a slow machine may let the runner lapse: keep it alive
            await runner.heartbeat(rid)
            return await _bound(c, "e1")

        assert (await _eventually(bound_while_alive)).status.runner_id == rid

        async def offline() -> Any:
            e = await c.get_environment("e1")
            cond = e.status.condition("RunnerReady")
            return e if cond is not None and cond.status == "False" else None

        e = await _eventually(offline)
        cond = e.status.condition("RunnerReady")
        assert cond is not None and cond.reason == "RunnerOffline" and "r1" in cond.message
        assert e.status.runner_id == rid  # still bound: its files are on that runner
        assert (await runner.get_runner(rid)).state == "offline"
        # nothing new is scheduled onto an offline runner
        waiting = await c.create_environment("e2", _spec())
        assert waiting.status.runner_id is None
        back = await runner.heartbeat(rid, RunnerHeartbeat())
        assert back.state == "ready"
        e = await c.get_environment("e1")
        assert e.status.condition("RunnerReady").status == "True"  # type: ignore[union-attr]
        assert (await _eventually(lambda: _bound(c, "e2"))).status.runner_id == rid


async def test_runner_watch_sees_only_its_environments(live: Api) -> None:
    api = live
    c = api.admin
    rid, runner = await api.runner("r1", labels={"pool": "a"})
    await api.runner("r2", labels={"pool": "b"})
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async for ev in runner.watch_runner_environments(rid, timeout=60):
            seen.append((ev.type, ev.object.metadata.name))
            if ev.type == "DELETED":
                return

    task = asyncio.create_task(watch())
    await api.watching()
    await c.create_environment("theirs", _spec(runnerSelector={"pool": "b"}))
    env = await c.create_environment("mine", _spec(runnerSelector={"pool": "a"}))
    await c.stop_environment("mine")
    await c.delete_environment("mine")
    await runner.confirm_teardown(rid, env.metadata.id)
    await asyncio.wait_for(task, 30)
    assert seen == [("ADDED", "mine"), ("MODIFIED", "mine"), ("MODIFIED", "mine"), ("DELETED", "mine")]
