"""Tenancy: runner owners and scopes, grants a runner cannot exceed, local sources, rootless isolation.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flex.api import Environment, RunnerCapacity, RunnerHeartbeat
from flex.client import AsyncFlexClient
from flex.errors import InvalidArgument, PermissionDenied
from tests.controlplane.conftest import Api

GIT = "https://host/org/repo.git"
GiB = 2**30
CAP = {"cpus": 8, "memory": 32 * GiB, "disk": 200 * GiB}


def _spec(**extra: Any) -> dict[str, Any]:
    return {"source": {"git": GIT}, **extra}


def _scheduled(env: Environment) -> tuple[str, str]:
    cond = env.status.condition("Scheduled")
    assert cond is not None
    return cond.status, cond.reason


async def _laptop(api: Api, user: AsyncFlexClient, owner: str, name: str) -> str:
    """A user joins their own laptop with a join token they made themselves."""
    token = await user.create_join_token({"owner": owner})
    assert token.grant.owner == owner
    joined = await api.client(None).join(token.token, name, "desktop", CAP, rootless=True)
    return joined.id


async def test_another_users_environment_cannot_land_on_a_desktop_runner(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    laptop = await _laptop(api, alice, "alice", "alice-laptop")
    # bob's selector names the laptop's labels: ownership comes first, so it stays unbound
    theirs = await bob.create_environment("b1", _spec(runnerSelector={"flex.dev/kind": "desktop"}))
    assert theirs.status.runner_id is None
    assert _scheduled(theirs) == ("False", "NoRunnerAllowed")
    cond = theirs.status.condition("Scheduled")
    assert cond is not None and "alice-laptop" not in cond.message  # no names of runners bob may not use
    plain = await bob.create_environment("b2", _spec())
    assert plain.status.runner_id is None
    mine = await alice.create_environment("a1", _spec())
    assert mine.status.runner_id == laptop and _scheduled(mine) == ("True", "Scheduled")
    # a shared runner joining later takes bob's waiting environments, never the laptop
    shared, _ = await api.runner("vm1")
    assert (await bob.get_environment("b2")).status.runner_id == shared
    # bob cannot make a token for alice's laptop, nor for a shared runner; an ownerless desktop is refused
    with pytest.raises(PermissionDenied):
        await bob.create_join_token({"owner": "alice"})
    with pytest.raises(PermissionDenied):
        await bob.create_join_token()
    bare = await api.admin.create_join_token()
    with pytest.raises(InvalidArgument, match="desktop runner belongs to a person"):
        await api.client(None).join(bare.token, "nobodys", "desktop", CAP)
    # users see their own runners only; the admin sees all
    assert [r.name for r in (await alice.list_runners()).items] == ["alice-laptop"]
    assert (await bob.list_runners()).items == []
    assert {r.name for r in (await api.admin.list_runners()).items} == {"alice-laptop", "vm1"}
    assert (await alice.get_runner(laptop)).owner == "alice"


async def test_a_shared_runner_can_be_limited_to_users_and_groups(api: Api) -> None:
    carol = api.client((await api.admin.create_user("carol", groups=["ml"])).token)
    dave, erin = await api.user("dave"), await api.user("erin")
    gpu, _ = await api.runner("gpu", grant={"users": ["dave"], "groups": ["ml"]})
    assert (await carol.create_environment("c1", _spec())).status.runner_id == gpu
    assert (await dave.create_environment("d1", _spec())).status.runner_id == gpu
    outside = await erin.create_environment("e1", _spec())
    assert outside.status.runner_id is None and _scheduled(outside) == ("False", "NoRunnerAllowed")
    assert (await carol.whoami()).groups == ["ml"]
    with pytest.raises(PermissionDenied):  # only an admin changes groups
        await erin.set_groups("erin", ["ml"])
    assert (await api.admin.set_groups("erin", ["ml", "web"])).groups == ["ml", "web"]

    async def bound() -> bool:  # the sweep retries waiting environments
        return (await erin.get_environment("e1")).status.runner_id == gpu

    deadline = asyncio.get_running_loop().time() + 20
    while not await bound():
        assert asyncio.get_running_loop().time() < deadline, "erin's environment was never bound"
        await asyncio.sleep(0.1)


async def test_declared_labels_and_capacity_stay_inside_the_grant(api: Api) -> None:
    grant = {"labels": {"zone": "eu", "pool": "*"}, "maxCapacity": {"cpus": 4, "memory": "16Gi", "disk": "100Gi"}}
    token = (await api.admin.create_join_token(grant)).token
    anon = api.client(None)
    small = {"cpus": 4, "memory": 16 * GiB, "disk": 100 * GiB}
    for labels, capacity, refused in (({"zone": "us"}, small, "zone=us"), ({"gpu": "yes"}, small, "gpu=yes"),
                                      ({"flex.dev/kind": "desktop"}, small, "flex.dev/kind"),
                                      ({}, {**small, "cpus": 1000}, "1000 cpus"),
                                      ({}, {**small, "memory": 2**40}, "memory")):
        with pytest.raises(PermissionDenied, match=refused):
            await anon.join(token, "r1", "vm", capacity, labels)
    # a refused join does not use the token up
    joined = await anon.join(token, "r1", "vm", small, {"zone": "eu", "pool": "batch"})
    runner = api.client(joined.credential)
    with pytest.raises(PermissionDenied, match="cpus"):
        await runner.heartbeat(joined.id, RunnerHeartbeat(capacity=RunnerCapacity(cpus=64, memory=1, disk=1)))
    with pytest.raises(PermissionDenied, match="zone=us"):
        await runner.heartbeat(joined.id, RunnerHeartbeat(labels={"zone": "us"}))
    seen = await runner.get_runner(joined.id)
    assert seen.capacity.cpus == 4 and seen.labels == {"zone": "eu", "pool": "batch"}
    assert seen.grant.max_capacity is not None and seen.grant.max_capacity.cpus == 4
    # an environment selecting a label the runner could not claim stays unbound
    env = await api.admin.create_environment("e1", _spec(runnerSelector={"zone": "us"}))
    assert env.status.runner_id is None and _scheduled(env) == ("False", "NoRunnerMatches")


async def test_local_sources_only_on_the_owners_desktop_runner(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    vm, _ = await api.runner("vm1")
    for source in ({"path": "/home/bob/src"}, {"git": "file:///home/bob/repo.git"}):
        with pytest.raises(InvalidArgument, match="desktop runner") as info:
            await bob.create_environment("local", {"source": source})
        assert "git@" in (info.value.hint or "")
    for git in ("git://host/repo.git", "ssh://git@host/repo.git", "git@host:org/repo.git", GIT):
        env = await bob.create_environment(f"r{len(git)}", {"source": {"git": git}})
        assert env.status.runner_id == vm
    laptop = await _laptop(api, alice, "alice", "alice-laptop")
    # only alice's laptop can read a folder on alice's laptop; a selector cannot send it elsewhere
    here = await alice.create_environment("here", {"source": {"path": "/home/alice/src"}})
    assert here.status.runner_id == laptop
    there = await alice.create_environment("there", {"source": {"git": "file:///home/alice/repo.git"},
                                                     "runnerSelector": {"flex.dev/kind": "vm"}})
    assert there.status.runner_id is None
    # an environment already on the VM cannot switch to a local folder
    on_vm = await alice.create_environment("remote", _spec(runnerSelector={"flex.dev/kind": "vm"}))
    assert on_vm.status.runner_id == vm
    with pytest.raises(InvalidArgument, match="vm1"):
        await alice.patch_environment("remote", {"spec": {"source": {"git": None, "path": "/home/alice/src"}}})
    assert (await alice.get_environment("remote")).spec.source.git == GIT


async def test_rootless_runner_refuses_a_second_user_it_cannot_isolate(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    rid, runner = await api.runner("shared", rootless=True, id_ranges=1)
    assert (await runner.get_runner(rid)).rootless is True
    assert (await alice.create_environment("a1", _spec())).status.runner_id == rid
    assert (await alice.create_environment("a2", _spec())).status.runner_id == rid  # one user: no isolation needed
    waiting = await bob.create_environment("b1", _spec())
    assert waiting.status.runner_id is None and _scheduled(waiting) == ("False", "CannotIsolate")
    cond = waiting.status.condition("Scheduled")
    assert cond is not None and "id range" in cond.message
    # the runner reports it can give three ranges now: one for each of the three environments
    await runner.heartbeat(rid, RunnerHeartbeat(id_ranges=3))
    assert (await bob.get_environment("b1")).status.runner_id == rid
    # a fourth environment would need a fourth range: it goes to a runner with root, which has ranges to spare
    root_id, _ = await api.runner("rooted", cpus=1)
    assert (await bob.create_environment("b2", _spec())).status.runner_id == root_id
