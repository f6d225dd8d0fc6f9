"""Users, tokens, isolation between users, rate-limited failures, body limits, the audit log, the admin token.

Runs on SQLite and on PostgreSQL (the ``backend`` fixture)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from flex.api import TokenCreate
from flex.controlplane.config import Settings
from flex.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable
from tests.controlplane.conftest import Api, running_app

GIT = "https://host/org/repo.git"


async def test_first_start_writes_the_admin_token_0600(api: Api) -> None:
    path = api.settings.admin_token_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api.admin_token.startswith("flexu_")
    me = (await api.raw(api.admin_token).get("/api/v1/users/me")).json()
    assert me["name"] == "admin" and me["admin"] is True
    assert not list(path.parent.glob(".admin-token*"))  # no temp file left behind


async def test_a_restart_keeps_the_admin_and_its_token(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with running_app(settings) as api:
        token = api.admin_token
        await api.admin.create_environment("e1", git=GIT)
    async with running_app(settings) as again:
        assert again.admin_token == token
        assert again.app.state.created_admin is False
        assert (await again.admin.get_environment("e1")).metadata.name == "e1"


async def test_users_see_only_their_own_environments(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    a = await alice.create_environment("shared-name", git=GIT)
    await bob.create_environment("shared-name", git=GIT)
    await alice.create_environment("only-alice", git=GIT)
    assert [e.metadata.name for e in (await bob.list_environments()).items] == ["shared-name"]
    # bob's "shared-name" is his own; alice's is invisible to him, by name and by id alike
    assert (await bob.get_environment("shared-name")).metadata.owner == "bob"
    for attempt in (bob.get_environment("only-alice"), bob.get_environment(a.metadata.id),
                    bob.get_environment("only-alice", owner="alice"),
                    bob.patch_environment(a.metadata.id, {"spec": {"desiredPhase": "stopped"}}),
                    bob.stop_environment("only-alice"), bob.delete_environment(a.metadata.id)):
        with pytest.raises(NotFound):
            await attempt
    assert (await alice.get_environment("only-alice")).spec.desired_phase == "running"
    # an admin sees everyone's, and addresses another user's by owner
    everyone = await api.admin.list_environments()
    assert sorted((e.metadata.owner, e.metadata.name) for e in everyone.items) == [
        ("alice", "only-alice"), ("alice", "shared-name"), ("bob", "shared-name")]
    assert (await api.admin.list_environments(owner="bob")).items[0].metadata.owner == "bob"
    stopped = await api.admin.stop_environment("shared-name", owner="alice")
    assert stopped.metadata.owner == "alice" and stopped.spec.desired_phase == "stopped"
    # users cannot manage users
    with pytest.raises(PermissionDenied):
        await bob.create_user("carol")
    with pytest.raises(AlreadyExists):
        await api.admin.create_user("bob")


async def test_tokens_scopes_expiry_and_revocation(api: Api) -> None:
    bob = await api.user("bob")
    read_only = await bob.create_token(TokenCreate(name="ci", scopes=["read"]))
    assert read_only.token.startswith("flexu_") and read_only.scopes == ["read"]
    ro = api.client(read_only.token)
    assert (await ro.list_environments()).items == []
    with pytest.raises(PermissionDenied):
        await ro.create_environment("e1", git=GIT)
    listed = await bob.list_tokens()
    assert {t.name for t in listed.items} == {"first token", "ci"}
    assert read_only.token not in json.dumps([t.to_wire() for t in listed.items])  # secrets are shown once
    await bob.delete_token(read_only.id)
    with pytest.raises(Unauthenticated):
        await ro.list_environments()
    with pytest.raises(NotFound):  # not bob's to delete
        await bob.delete_token((await api.admin.list_tokens()).items[0].id)
    with pytest.raises(InvalidArgument):
        await bob.create_token(TokenCreate(expires_at=datetime.now(UTC) - timedelta(hours=1)))
    with pytest.raises(PermissionDenied):  # a read-only token cannot mint tokens
        await api.client((await bob.create_token(TokenCreate(scopes=["read"]))).token).create_token()
    soon = await bob.create_token(TokenCreate(expires_at=datetime.now(UTC) + timedelta(hours=1)))
    short = api.client(soon.token)
    await short.list_environments()
    # an hour passes: move its expiry into the past rather than wait
    from sqlalchemy import text

    cp = api.app.state.cp
    with cp.db.write() as s:
        s.execute(text("UPDATE tokens SET expires_at = :t WHERE id = :i"),
                  {"t": datetime.now(UTC) - timedelta(minutes=1), "i": soon.id})
    cp.credentials.clear()
    with pytest.raises(Unauthenticated) as info:
        await short.list_environments()
    assert "expired" in info.value.message


async def test_missing_or_bad_credentials(api: Api) -> None:
    raw = api.raw()
    r = await raw.get("/api/v1/environments")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["kind"] == "Unauthenticated" and r.json()["status"] == 401
    r = await raw.get("/api/v1/environments", headers={"Authorization": "Bearer flexu_nope"})
    assert r.status_code == 401


async def test_failed_authentication_is_rate_limited(make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(auth_failures_per_minute=5)) as api:
        bad = api.client("flexu_guess")
        for _ in range(5):
            with pytest.raises(Unauthenticated):
                await bad.list_environments()
        r = await api.raw("flexu_guess").get("/api/v1/environments")
        assert r.status_code == 429 and r.headers["retry-after"] and r.json()["kind"] == "Unavailable"
        with pytest.raises(Unavailable):  # now even a good token from this address waits
            await api.admin.list_environments()
        with pytest.raises(Unavailable):  # and so do join attempts
            await api.client(None).join("flexj_guess", "r1", "vm", {"cpus": 1, "memory": 1, "disk": 1})


async def test_bodies_over_4_mib_are_413(api: Api) -> None:
    raw = api.raw(api.admin_token)
    big = {"name": "e1", "spec": {"source": {"git": GIT}, "env": {"BIG": "x" * (4 * 2**20)}}}
    r = await raw.post("/api/v1/environments", json=big)
    assert r.status_code == 413 and r.json()["kind"] == "InvalidArgument"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"x" * 2**20

    r = await raw.post("/api/v1/environments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    ok = {"name": "e1", "spec": {"source": {"git": GIT}, "env": {"BIG": "x" * (3 * 2**20)}}}
    assert (await raw.post("/api/v1/environments", json=ok)).status_code == 201


async def test_audit_log_records_who_did_what_without_secrets(api: Api) -> None:
    bob = await api.user("bob")
    tok = await bob.create_token(TokenCreate(name="laptop"))
    await bob.create_environment("e1", git=GIT)
    await bob.stop_environment("e1")
    join = await api.admin.create_join_token()
    runner = await api.client(None).join(join.token, "r1", "vm", {"cpus": 4, "memory": "8Gi", "disk": "50Gi"})
    await bob.delete_environment("e1")
    everything = await api.admin.audit_events(limit=1000)
    actions = [(e.actor, e.action, e.resource) for e in reversed(everything.items)]
    assert ("user:admin", "user.create", "user:bob") in actions
    assert ("user:bob", "environment.create", "environment:bob/e1") in actions
    assert ("user:bob", "environment.update", "environment:bob/e1") in actions
    assert ("runner:r1", "runner.join", f"runner:{runner.id}") in actions
    text = json.dumps([e.to_wire() for e in everything.items])
    for secret in (api.admin_token, tok.token, join.token, runner.credential):
        assert secret not in text
    mine = await bob.audit_events()
    assert mine.items and all(e.actor == "user:bob" for e in mine.items)
    page = await api.admin.audit_events(limit=2)
    older = await api.admin.audit_events(limit=2, cont=page.continue_)
    assert page.items[-1].id > older.items[0].id
