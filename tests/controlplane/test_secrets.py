"""Secrets (issue 12, point 3): write-only, encrypted at rest, delivered only to the bound runner.

Over real HTTP (the ``live`` fixture), on SQLite and on PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from flex.api import TokenCreate
from flex.client import FlexClient
from flex.errors import InvalidArgument, NotFound, PermissionDenied
from tests.conftest import run_flex
from tests.controlplane.conftest import Api, free_port
from tests.controlplane.server_process import start

GIT = "https://host/org/repo.git"
VALUE = "ghp_s3cr3t-Value-0123456789"  # distinctive, so a leak anywhere is found by a substring search
FIRST = "old-Value-9f8e7d6c"


async def _join(api: Api, name: str) -> tuple[str, str]:
    token = (await api.admin.create_join_token()).token
    joined = await api.client(None).join(token, name, "vm", {"cpus": 8, "memory": "32Gi", "disk": "200Gi"})
    return joined.id, joined.credential


async def test_secrets_are_write_only_and_reach_only_the_bound_runner(live: Api) -> None:
    (r1, cred1), (r2, cred2) = await _join(live, "r1"), await _join(live, "r2")
    credentials = {r1: cred1, r2: cred2}
    runner1, runner2 = live.client(cred1), live.client(cred2)
    alice_created = await live.admin.create_user("alice")
    alice = live.client(alice_created.token)
    e1 = await alice.create_environment("e1", git=GIT)
    e2 = await alice.create_environment("e2", git=GIT)
    rv = e2.metadata.resource_version
    bound = {r1: runner1, r2: runner2}
    mine, other = bound[e1.status.runner_id or ""], bound[next(r for r in bound if r != e1.status.runner_id)]
    mine_id = e1.status.runner_id or ""

    raw = live.raw(alice_created.token)
    r = await raw.put("/api/v1/secrets/GH_TOKEN", json={"value": FIRST, "environments": ["e1"]})
    assert r.status_code == 201 and r.json()["name"] == "GH_TOKEN" and "value" not in r.json()
    r = await raw.put("/api/v1/secrets/GH_TOKEN", json={"value": VALUE, "environments": ["e1"]})
    assert r.status_code == 200 and r.json()["environments"] == ["e1"] and VALUE not in r.text
    await alice.put_secret("EVERYWHERE", VALUE + "-all", ["*"])
    await alice.put_secret("ONLY_E2", VALUE + "-e2", ["e2"])
    listed = await alice.list_secrets()
    assert [(s.name, s.environments) for s in listed.items] == [
        ("EVERYWHERE", ["*"]), ("GH_TOKEN", ["e1"]), ("ONLY_E2", ["e2"])]

    # the runner e1 is bound to gets the values that apply to e1, and only that runner
    got = await mine.runner_secrets(mine_id, e1.metadata.id)
    assert {s.name: s.value for s in got.items} == {"EVERYWHERE": VALUE + "-all", "GH_TOKEN": VALUE}
    other_id = next(r for r in bound if r != mine_id)
    with pytest.raises(NotFound):
        await other.runner_secrets(other_id, e1.metadata.id)
    with pytest.raises(PermissionDenied):
        await other.runner_secrets(mine_id, e1.metadata.id)
    r = await raw.get(f"/api/v1/runners/{mine_id}/environments/{e1.metadata.id}/secrets")
    assert r.status_code == 403 and VALUE not in r.text
    # another user's environment of the same name gets none of alice's secrets
    bob = await live.user("bob")
    b1 = await bob.create_environment("e1", git=GIT)
    b1_runner = b1.status.runner_id or ""
    assert (await bound[b1_runner].runner_secrets(b1_runner, b1.metadata.id)).items == []

    # no read shows a value: user reads, runner reads, watches, the audit log
    await alice.patch_environment("e1", {"spec": {"env": {"PLAIN": "not-secret"}}})
    admin_raw = live.raw(live.admin_token)
    for client, path in [(raw, "/api/v1/secrets"), (raw, "/api/v1/environments"), (raw, "/api/v1/environments/e1"),
                         (raw, "/api/v1/events"), (admin_raw, "/api/v1/events?limit=1000"),
                         (admin_raw, "/api/v1/environments?owner=alice"),
                         (live.raw(None), "/openapi.json")]:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert VALUE not in r.text and FIRST not in r.text, path
    for runner_id, credential in credentials.items():
        rr = live.raw(credential)
        r = await rr.get(f"/api/v1/runners/{runner_id}/environments")
        assert r.status_code == 200 and VALUE not in r.text
        r = await rr.get(f"/api/v1/runners/{runner_id}/environments",
                         params={"watch": 1, "resourceVersion": 0, "timeoutSeconds": 0.5})
        assert "event: ADDED" in r.text and VALUE not in r.text
    r = await raw.get("/api/v1/environments", params={"watch": 1, "resourceVersion": rv - 2, "timeoutSeconds": 0.5})
    assert "event: MODIFIED" in r.text and "not-secret" in r.text and VALUE not in r.text
    actions = [e.action for e in (await live.admin.audit_events(actor="user:alice")).items]
    assert actions[:4] == ["environment.update", "secret.create", "secret.create", "secret.update"]

    # at rest: only ciphertext, sealed with a key in a 0600 file
    db = live.app.state.cp.db
    with db.read() as s:
        rows = [tuple(str(v) for v in row) for row in s.execute(text("SELECT * FROM secrets")).all()]
    assert len(rows) == 3 and not any(VALUE in v for row in rows for v in row)
    key_file = live.settings.secret_key_path
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and VALUE.encode() not in key_file.read_bytes()

    # delete: gone from the list and from what the runner gets
    await alice.delete_secret("GH_TOKEN")
    with pytest.raises(NotFound):
        await alice.delete_secret("GH_TOKEN")
    assert [s.name for s in (await mine.runner_secrets(mine_id, e1.metadata.id)).items] == ["EVERYWHERE"]


async def test_bad_secret_input_is_one_clear_line(live: Api) -> None:
    raw = live.raw(live.admin_token)
    r = await raw.put("/api/v1/secrets/1BAD", json={"value": VALUE})
    assert r.status_code == 422 and r.json()["message"].startswith("path.name:")
    r = await raw.put("/api/v1/secrets/OK", json={"value": VALUE, "environments": ["Not An Env"]})
    assert r.status_code == 422 and "environments" in r.json()["message"] and VALUE not in r.text
    r = await raw.put("/api/v1/secrets/OK", json={"value": VALUE + "x" * 40_000})
    assert r.status_code == 422 and r.json()["message"].startswith("value:") and VALUE not in r.text
    r = await raw.put("/api/v1/secrets/OK", json={"environments": ["*"]})
    assert r.status_code == 422 and r.json()["message"] == "value: Field required"
    with pytest.raises(InvalidArgument):
        await live.admin.put_secret("OK", VALUE, ["Not An Env"])
    read_only = (await live.admin.create_token(TokenCreate(scopes=["read"]))).token
    r = await live.raw(read_only).put("/api/v1/secrets/OK", json={"value": VALUE})
    assert r.status_code == 403
    r = await live.raw(None).get("/api/v1/secrets")
    assert r.status_code == 401


def test_secret_values_never_reach_the_server_log(tmp_path: Path, backend: str | None) -> None:
    """The real `flex server` at --log-level debug: write, replace, read (as the runner), fail, delete."""
    server = start(tmp_path / "home", "--log-level", "debug", backend=backend)
    try:
        with FlexClient(server.url, server.admin_token) as admin:
            join = admin.create_join_token().token
            joined = admin.join(join, "r1", "vm", {"cpus": 4, "memory": "8Gi", "disk": "40Gi"})
            env = admin.create_environment("e1", git=GIT)
            admin.put_secret("API_KEY", FIRST, ["e1"])
            admin.put_secret("API_KEY", VALUE, ["*"])
            with FlexClient(server.url, joined.credential) as runner:
                got = runner.runner_secrets(joined.id, env.metadata.id)
            assert [(s.name, s.value) for s in got.items] == [("API_KEY", VALUE)]
            with server.client(server.admin_token) as raw:
                r = raw.put("/api/v1/secrets/API_KEY", json={"value": VALUE, "environments": ["Bad Env"]})
                assert r.status_code == 422 and VALUE not in r.text
                r = raw.put("/api/v1/secrets/API_KEY", content=b'{"value": "' + VALUE.encode() + b'", broken')
                assert r.status_code == 422 and VALUE not in r.text
            admin.delete_secret("API_KEY")
    finally:
        log = server.stop()
    assert "Application startup complete" in log  # the log was captured
    assert VALUE not in log and FIRST not in log


def test_a_secret_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "server" / "secret-key"
    r = run_flex("server", "--listen", f"127.0.0.1:{free_port()}", "--db", "postgresql://nobody@127.0.0.1:1/x",
                 env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 6  # no database, but the key was made first: 0600 in a 0700 directory
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    before = key.read_bytes()
    key.chmod(0o644)
    r = run_flex("server", "--listen", f"127.0.0.1:{free_port()}", env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 1 and r.stderr.splitlines() == [
        f"error: the secret key file {key} is accessible to others (mode 0644)", f"hint: chmod 600 {key}"]
    assert key.read_bytes() == before  # never replaced: the values sealed with it must stay readable
