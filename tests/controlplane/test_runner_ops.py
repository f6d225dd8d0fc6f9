"""Runner operations: cordon, drain, delete, rotate and revoke a credential (across replicas), credential
expiry, and force-deleting an environment whose runner is gone.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flex.api import RunnerHeartbeat, TokenCreate
from flex.controlplane.config import Settings
from flex.errors import FailedPrecondition, NotFound, PermissionDenied, Unauthenticated
from tests.controlplane.conftest import Api, running_app

GIT = "https://host/org/repo.git"


async def test_cordon_keeps_new_environments_off_until_uncordoned(api: Api) -> None:
    rid, _ = await api.runner("r1")
    raw = api.raw(api.admin_token)
    before = await api.admin.create_environment("e1", git=GIT)
    assert before.status.runner_id == rid
    r = await raw.post(f"/api/v1/runners/{rid}:cordon")
    assert r.status_code == 200 and r.json()["cordoned"] is True
    waiting = await api.admin.create_environment("e2", git=GIT)
    cond = waiting.status.condition("Scheduled")
    assert waiting.status.runner_id is None and cond is not None and cond.reason == "RunnerCordoned"
    assert (await api.admin.get_environment("e1")).status.runner_id == rid  # those bound stay
    bob = await api.user("bob")
    with pytest.raises(NotFound):  # not his runner: it does not exist for him
        await bob.cordon_runner(rid)
    back = await api.admin.uncordon_runner("r1")  # by name works too
    assert back.cordoned is False
    assert (await api.admin.get_environment("e2")).status.runner_id == rid
    events = [e.action for e in (await api.admin.audit_events(limit=100)).items]
    assert "runner.cordon" in events and "runner.uncordon" in events


async def test_drain_is_refused_while_environments_are_bound(api: Api) -> None:
    rid, runner = await api.runner("r1")
    env = await api.admin.create_environment("e1", git=GIT)
    with pytest.raises(FailedPrecondition, match="backups"):
        await api.admin.drain_runner(rid)
    assert (await api.admin.get_runner(rid)).cordoned is False  # a refused drain changes nothing
    await api.admin.delete_environment("e1")
    await runner.confirm_teardown(rid, env.metadata.id)
    drained = await api.admin.drain_runner(rid)
    assert drained.cordoned is True and drained.environments == 0


async def test_delete_a_runner_and_force_delete_what_it_left(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(heartbeat_timeout=1.0, sweep_interval=0.2)) as api:
        bob = await api.user("bob")
        rid, runner = await api.runner("r1")
        env = await bob.create_environment("e1", git=GIT)
        assert env.status.runner_id == rid
        raw = api.raw(api.admin_token)
        r = await raw.delete(f"/api/v1/runners/{rid}")
        assert r.status_code == 412 and "still has 1 environment" in r.json()["message"]
        # the runner is gone for good: it stops heartbeating, and a plain delete waits for it forever
        deadline = time.monotonic() + 30
        while (await api.admin.get_runner(rid)).state != "offline":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        r = await raw.delete("/api/v1/environments/e1", params={"owner": "bob"})
        assert r.status_code == 202
        assert (await bob.get_environment("e1")).metadata.deleting
        with pytest.raises(PermissionDenied, match="admin"):  # the owner may not skip the runner
            await bob.delete_environment("e1", force=True)
        r = await raw.delete("/api/v1/environments/e1", params={"owner": "bob", "force": "true"})
        assert r.status_code == 200 and r.json()["metadata"]["name"] == "e1"
        with pytest.raises(NotFound):
            await bob.get_environment("e1")
        again = await bob.create_environment("e1", git=GIT)  # the name is free again
        assert again.metadata.id != env.metadata.id
        await api.admin.delete_environment("e1", owner="bob", force=True)
        r = await raw.delete("/api/v1/runners/r1")
        assert r.status_code == 204
        with pytest.raises(Unauthenticated):  # its credential went with it
            await runner.heartbeat(rid)
        with pytest.raises(NotFound):
            await api.admin.get_runner(rid)
        actions = [(e.action, e.resource) for e in (await api.admin.audit_events(limit=100)).items]
        assert ("environment.force-delete", "environment:bob/e1") in actions
        assert ("runner.delete", f"runner:{rid}") in actions


async def test_a_revoked_credential_stops_at_once_here_and_within_the_cache_ttl_elsewhere(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    ttl = 1.0
    async with running_app(make_settings(credential_cache_ttl=ttl)) as one:
        other = make_settings(server_dir=tmp_path / "replica", db_url=one.settings.database_url,
                              credential_cache_ttl=ttl)
        async with running_app(other) as two:
            token = (await one.admin.create_join_token()).token
            joined = await one.client(None).join(token, "r1", "vm", {"cpus": 4, "memory": "8Gi", "disk": "50Gi"})
            rid, here, there = joined.id, one.client(joined.credential), two.client(joined.credential)
            await here.heartbeat(rid)
            await there.heartbeat(rid)  # both replicas now hold it in their credential caches
            revoked = await one.admin.revoke_runner(rid)
            assert revoked.name == "r1"
            with pytest.raises(Unauthenticated):
                await here.heartbeat(rid)
            started = time.monotonic()
            while True:
                try:
                    await there.heartbeat(rid)
                except Unauthenticated:
                    break
                await asyncio.sleep(0.05)
            assert time.monotonic() - started <= ttl + 1.0
            # the runner and its environments stay; rotating gives it a working credential again
            fresh = await one.admin.rotate_runner(rid)
            assert fresh.credential.startswith("flexr_") and fresh.expires_at is not None
            for replica in (one, two):
                assert (await replica.client(fresh.credential).heartbeat(rid)).name == "r1"
            read_only = await one.admin.create_token(TokenCreate(scopes=["read"]))
            with pytest.raises(PermissionDenied):  # rotating is a write
                await one.client(read_only.token).rotate_runner(rid)
            # a runner may rotate its own credential; the old one stops working on this replica at once
            mine = one.client(fresh.credential)
            newer = await mine.rotate_runner(rid)
            with pytest.raises(Unauthenticated):
                await mine.heartbeat(rid)
            assert (await one.client(newer.credential).heartbeat(rid)).id == rid
            text = str([e.to_wire() for e in (await one.admin.audit_events(limit=100)).items])
            assert "runner.revoke" in text and "runner.rotate" in text
            assert fresh.credential not in text and newer.credential not in text


async def test_a_runner_credential_expires_unless_heartbeats_renew_it(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(runner_credential_ttl=3600.0)) as api:
        rid, runner = await api.runner("r1")
        first = (await runner.heartbeat(rid)).credential_expires_at
        assert first is not None and 3500 < (first - datetime.now(UTC)).total_seconds() <= 3600
        await asyncio.sleep(0.05)
        renewed = (await runner.heartbeat(rid, RunnerHeartbeat())).credential_expires_at
        assert renewed is not None and renewed > first
        # an hour without heartbeats passes: move the expiry into the past rather than wait
        from sqlalchemy import text

        cp = api.app.state.cp
        with cp.db.write() as s:
            s.execute(text("UPDATE runners SET credential_expires_at = :t WHERE id = :i"),
                      {"t": datetime.now(UTC) - timedelta(minutes=1), "i": rid})
        cp.credentials.clear()
        with pytest.raises(Unauthenticated, match="expired") as info:
            await runner.heartbeat(rid)
        assert "rotate" in (info.value.hint or "")
        fresh = await api.admin.rotate_runner(rid)  # an admin brings it back
        assert (await api.client(fresh.credential).heartbeat(rid)).state == "ready"
