"""Policy: who may ask for nested Docker, per-user limits on environments and resources, default memory.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import pytest

from flex.api import Policy
from flex.errors import PermissionDenied
from tests.controlplane.conftest import Api

GIT = "https://host/org/repo.git"
GiB = 2**30


async def test_only_admins_and_listed_users_and_groups_get_nested_docker(api: Api) -> None:
    bob = await api.user("bob")
    carol = api.client((await api.admin.create_user("carol", groups=["docker"])).token)
    raw = api.raw(api.admin_token)
    r = await raw.put("/api/v1/policy", json={"docker": {"allowed": "listed", "groups": ["docker"]}})
    assert r.status_code == 200 and r.json()["docker"]["allowed"] == "listed"
    with pytest.raises(PermissionDenied, match=r"spec\.docker"):
        await bob.create_environment("d1", {"source": {"git": GIT}, "docker": True})
    assert (await bob.create_environment("plain", {"source": {"git": GIT}})).spec.docker is False
    with pytest.raises(PermissionDenied, match=r"spec\.docker"):
        await bob.patch_environment("plain", {"spec": {"docker": True}})
    assert (await carol.create_environment("d1", {"source": {"git": GIT}, "docker": True})).spec.docker
    assert (await api.admin.create_environment("d1", {"source": {"git": GIT}, "docker": True})).spec.docker
    # users read the policy (it says what they may ask for) but cannot change it
    assert (await api.raw((await api.admin.create_user("dave")).token).get("/api/v1/policy")).status_code == 200
    r = await api.raw((await api.admin.create_user("erin")).token).put("/api/v1/policy", json={})
    assert r.status_code == 403
    events = [(e.actor, e.action) for e in (await api.admin.audit_events()).items]
    assert ("user:admin", "policy.update") in events


async def test_per_user_limits_on_environments_and_resources(api: Api) -> None:
    bob = await api.user("bob")
    carol = await api.user("carol")
    await api.admin.set_policy(Policy.model_validate({
        "userLimits": {"environments": 2, "cpus": 3, "memory": "8Gi"},
        "userOverrides": {"carol": {"environments": 3}}}))
    await bob.create_environment("e1", {"source": {"git": GIT}, "resources": {"cpus": 1}})
    await bob.create_environment("e2", {"source": {"git": GIT}, "resources": {"cpus": 2}})
    with pytest.raises(PermissionDenied, match="2 environment") as info:
        await bob.create_environment("e3", {"source": {"git": GIT}, "resources": {"cpus": 0.1}})
    assert "limit" in (info.value.hint or "")
    with pytest.raises(PermissionDenied, match="cpus"):
        await bob.patch_environment("e2", {"spec": {"resources": {"cpus": 3}}})
    with pytest.raises(PermissionDenied, match="memory"):
        await bob.patch_environment("e2", {"spec": {"resources": {"memory": "7Gi"}}})
    assert (await bob.patch_environment("e2", {"spec": {"resources": {"cpus": 0.5}}})).spec.resources.cpus == 0.5
    await bob.delete_environment("e1")  # never bound: gone at once, and no longer counted
    await bob.create_environment("e3", {"source": {"git": GIT}})
    for name in ("c1", "c2", "c3"):  # carol's own limit replaces the default one
        await carol.create_environment(name, {"source": {"git": GIT}})
    with pytest.raises(PermissionDenied):
        await carol.create_environment("c4", {"source": {"git": GIT}})


async def test_default_memory_for_environments_that_ask_for_none(api: Api) -> None:
    await api.admin.set_policy(Policy.model_validate({"defaultMemory": "1Gi"}))
    assert (await api.admin.get_policy()).default_memory == GiB
    raw = api.raw(api.admin_token)
    r = await raw.post("/api/v1/environments", json={"name": "e1", "spec": {"source": {"git": GIT}}})
    assert r.status_code == 201 and r.json()["spec"]["resources"]["memory"] == GiB
    assert (await api.admin.create_environment("e2", git=GIT)).spec.resources.memory == GiB
    asked = await api.admin.create_environment("e3", {"source": {"git": GIT}, "resources": {"memory": "4Gi"}})
    assert asked.spec.resources.memory == 4 * GiB
    cpus_only = await api.admin.create_environment("e4", {"source": {"git": GIT}, "resources": {"cpus": 2}})
    assert cpus_only.spec.resources.memory == GiB and cpus_only.spec.resources.disk == 10 * GiB
