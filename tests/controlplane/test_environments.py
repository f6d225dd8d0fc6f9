"""Environments through the REST API: create, read, list, merge-patch, start/stop, delete; versions and 409s.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from flex.errors import AlreadyExists, Conflict, InvalidArgument, InvalidConfiguration, NotFound
from tests.controlplane.conftest import Api

GIT = "https://host/org/repo.git"
MINIMAL = {"name": "e1", "spec": {"source": {"git": GIT}, "desiredPhase": "running"}}


async def test_minimal_create_is_stored_with_versions_and_defaults(api: Api) -> None:
    raw = api.raw(api.admin_token)
    r = await raw.post("/api/v1/environments", json=MINIMAL)
    assert r.status_code == 201, r.text
    body = r.json()
    meta = body["metadata"]
    assert meta["name"] == "e1" and meta["owner"] == "admin" and meta["id"].startswith("env_")
    assert meta["generation"] == 1 and meta["resourceVersion"] >= 1
    assert r.headers["etag"] == f'"{meta["resourceVersion"]}"'
    assert body["spec"]["desiredPhase"] == "running" and body["spec"]["source"]["git"] == GIT
    assert body["status"]["phase"] == "pending" and body["status"]["observedGeneration"] == 0
    sched = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
    assert sched["status"] == "False" and sched["reason"] == "NoRunnerReady"
    got = await raw.get("/api/v1/environments/e1")
    assert got.status_code == 200 and got.json() == body
    by_id = await raw.get(f"/api/v1/environments/{meta['id']}")
    assert by_id.json()["metadata"]["name"] == "e1"


async def test_same_name_twice_conflicts_but_not_across_users(api: Api) -> None:
    admin = api.admin
    await admin.create_environment("e1", git=GIT)
    with pytest.raises(AlreadyExists):
        await admin.create_environment("e1", git=GIT)
    bob = await api.user("bob")
    env = await bob.create_environment("e1", git=GIT)
    assert env.metadata.owner == "bob"


async def test_generation_moves_only_with_the_spec(api: Api) -> None:
    c = api.admin
    env = await c.create_environment("e1", git=GIT)
    rv0 = env.metadata.resource_version
    labelled = await c.patch_environment("e1", {"metadata": {"labels": {"team": "a"}}})
    assert labelled.metadata.labels == {"team": "a"}
    assert labelled.metadata.generation == 1 and labelled.metadata.resource_version > rv0
    stopped = await c.patch_environment("e1", {"spec": {"desiredPhase": "stopped"}})
    assert stopped.spec.desired_phase == "stopped"
    assert stopped.metadata.generation == 2 and stopped.metadata.resource_version > labelled.metadata.resource_version
    same = await c.patch_environment("e1", {"spec": {"desiredPhase": "stopped"}})
    assert same.metadata.resource_version == stopped.metadata.resource_version  # a no-op is not a write
    started = await c.start_environment("e1")
    assert started.spec.desired_phase == "running" and started.metadata.generation == 3
    again = await c.stop_environment("e1")
    assert again.spec.desired_phase == "stopped" and again.metadata.generation == 4
    removed = await c.patch_environment("e1", {"metadata": {"labels": {"team": None}}})
    assert removed.metadata.labels == {} and removed.metadata.generation == 4


async def test_rebuild_is_a_new_generation_every_time_and_starts_it(api: Api) -> None:
    c = api.admin
    plain = await c.create_environment("e1", git=GIT)
    assert "rebuild" not in plain.spec.to_wire()  # unset, so the runner's fingerprint of older specs holds
    await c.stop_environment("e1")
    once = await c.rebuild_environment("e1")
    assert once.spec.rebuild == 1 and once.spec.desired_phase == "running" and once.metadata.generation == 3
    twice = await c.rebuild_environment("e1")
    assert twice.spec.rebuild == 2 and twice.metadata.generation == 4  # never a no-op
    with pytest.raises(Conflict):
        await c.rebuild_environment("e1", resource_version=once.metadata.resource_version)
    bob = await api.user("bob")
    with pytest.raises(NotFound):
        await bob.rebuild_environment("e1")


async def test_only_spec_and_labels_may_change(api: Api) -> None:
    raw = api.raw(api.admin_token)
    await raw.post("/api/v1/environments", json=MINIMAL)
    for patch in ({"status": {"phase": "running"}}, {"metadata": {"owner": "mallory"}},
                  {"metadata": {"generation": 99}}, {"status": {"runnerId": "run_x"}}, {"kind": "x"}):
        r = await raw.patch("/api/v1/environments/e1", json=patch)
        assert r.status_code == 400, (patch, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["kind"] == "InvalidArgument"
    bad = await raw.patch("/api/v1/environments/e1", json={"spec": {"desiredPhase": "flying"}})
    assert bad.status_code == 422 and "desiredPhase" in bad.json()["message"]
    env = (await raw.get("/api/v1/environments/e1")).json()
    assert env["status"]["phase"] == "pending" and env["metadata"]["owner"] == "admin"


async def test_invalid_create_bodies_are_problems(api: Api) -> None:
    raw = api.raw(api.admin_token)
    cases = [
        {"name": "e1", "spec": {}},  # no source
        {"name": "E_1", "spec": {"source": {"git": GIT}}},
        {"name": "e1", "spec": {"source": {"git": GIT, "path": "/src"}}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "desiredPhase": "paused"}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "resources": {"memory": "lots"}}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "ports": [{"port": 70000}]}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "devcontainer": {"path": "../etc/passwd"}}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "env": {"1BAD": "x"}}},
        {"name": "e1", "spec": {"source": {"git": GIT}, "status": {}}},
        {"name": "e1", "spec": {"source": {"git": GIT}}, "status": {"phase": "running"}},
    ]
    for body in cases:
        r = await raw.post("/api/v1/environments", json=body)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert problem["status"] == 422 and problem["kind"] == "InvalidArgument" and problem["title"]
        assert "\n" not in problem["message"]
    listed = (await raw.get("/api/v1/environments")).json()
    assert listed["items"] == []


async def test_inline_config_and_quantities(api: Api) -> None:
    env = await api.admin.create_environment("e1", {
        "source": {"git": GIT, "ref": "main"}, "devcontainer": {"config": {"image": "debian:12"}},
        "resources": {"cpus": 2, "memory": "4Gi", "disk": "20G"}, "docker": True, "env": {"A": "1"},
        "ports": [{"port": 3000, "name": "web"}], "runnerSelector": {"zone": "eu"}})
    assert env.spec.resources.memory == 4 * 2**30 and env.spec.resources.disk == 20 * 10**9
    assert env.spec.devcontainer.config == {"image": "debian:12"} and env.spec.docker
    # an inline devcontainer.json is checked against the devcontainer schema, on create and on change
    raw = api.raw(api.admin_token)
    bad = {"name": "e2", "spec": {"source": {"git": GIT}, "devcontainer": {"config": {"image": 12}}}}
    r = await raw.post("/api/v1/environments", json=bad)
    assert r.status_code == 400 and r.json()["kind"] == "InvalidConfiguration", r.text
    assert "image" in r.json()["message"]
    with pytest.raises(InvalidConfiguration):
        await api.admin.patch_environment("e1", {"spec": {"devcontainer": {"config": {"forwardPorts": "x"}}}})
    assert (await api.admin.get_environment("e1")).spec.devcontainer.config == {"image": "debian:12"}


async def test_stale_if_match_is_409_and_changes_nothing(api: Api) -> None:
    c = api.admin
    env = await c.create_environment("e1", git=GIT)
    rv = env.metadata.resource_version
    fresh = await c.patch_environment("e1", {"spec": {"env": {"A": "1"}}}, resource_version=rv)
    for attempt in (
        c.patch_environment("e1", {"spec": {"env": {"A": "2"}}}, resource_version=rv),
        c.stop_environment("e1", resource_version=rv),
        c.delete_environment("e1", resource_version=rv),
    ):
        with pytest.raises(Conflict) as info:
            await attempt
        assert "resourceVersion" in info.value.message and info.value.hint
    now = await c.get_environment("e1")
    assert now.spec.env == {"A": "1"} and now.spec.desired_phase == "running"
    assert now.metadata.resource_version == fresh.metadata.resource_version


async def test_two_writers_racing_on_one_version_exactly_one_wins(api: Api) -> None:
    c1, c2 = api.admin, api.admin
    await c1.create_environment("e1", git=GIT)
    for round_ in range(8):
        env = await c1.get_environment("e1")
        rv = env.metadata.resource_version
        results = await asyncio.gather(
            c1.patch_environment("e1", {"spec": {"env": {"W": f"one-{round_}"}}}, resource_version=rv),
            c2.patch_environment("e1", {"spec": {"env": {"W": f"two-{round_}"}}}, resource_version=rv),
            return_exceptions=True)
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, BaseException)]
        assert len(wins) == 1 and len(losses) == 1, results
        assert isinstance(losses[0], Conflict)
        final = await c1.get_environment("e1")
        assert final.spec.env == wins[0].spec.env  # the winner's write is what is stored
        assert final.metadata.generation == env.metadata.generation + 1


async def test_list_pages_and_filters(api: Api) -> None:
    c = api.admin
    for i in range(7):
        await c.create_environment(f"e{i}", git=GIT, labels={"team": "a" if i % 2 else "b"})
    seen: list[str] = []
    cont = None
    pages = 0
    while True:
        page = await c.list_environments(limit=3, cont=cont)
        pages += 1
        seen += [e.metadata.name for e in page.items]
        assert page.metadata.resource_version >= 7
        cont = page.metadata.continue_
        if not cont:
            break
    assert seen == [f"e{i}" for i in range(7)] and pages == 3
    team_a = await c.list_environments(labels={"team": "a"}, limit=2)
    assert [e.metadata.name for e in team_a.items] == ["e1", "e3"] and team_a.metadata.continue_
    rest = await c.list_environments(labels={"team": "a"}, limit=2, cont=team_a.metadata.continue_)
    assert [e.metadata.name for e in rest.items] == ["e5"] and rest.metadata.continue_ is None
    pending = await c.list_environments(phase="running")
    assert pending.items == []
    with pytest.raises(InvalidArgument):
        await c.list_environments(cont="garbage!")


async def test_delete_of_an_unscheduled_environment_is_immediate(api: Api) -> None:
    c = api.admin
    await c.create_environment("e1", git=GIT)
    raw = api.raw(api.admin_token)
    r = await raw.delete("/api/v1/environments/e1")
    assert r.status_code == 200 and r.json()["metadata"]["deletionTimestamp"]
    with pytest.raises(NotFound):
        await c.get_environment("e1")
    await c.create_environment("e1", git=GIT)  # the name is free again
