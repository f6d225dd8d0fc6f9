"""The control plane's side of a move (issue 17.5), with two runners speaking the runner API as a runner does:
what is refused and how, each phase as the runners see it, the rollback, and the shared repository's password
going only to runners. Runs on SQLite and on PostgreSQL (the ``backend`` fixture); tests/runner/test_move.py
moves real environments between real runners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flex.api import BackupReport, EnvironmentStatus, LastBackup, RunnerHeartbeat, set_condition
from flex.client import AsyncFlexClient
from flex.controlplane.config import Settings
from flex.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tests.controlplane.conftest import Api, running_app

SPEC = {"source": {"git": "https://host/org/repo.git"}, "resources": {"cpus": 1, "memory": 2**30, "disk": 2**30},
        "runnerSelector": {"side": "a"}}


async def _pair(api: Api, repo: str = "shared") -> tuple[tuple[str, AsyncFlexClient], tuple[str, AsyncFlexClient]]:
    a = await api.runner("r1", labels={"side": "a"})
    b = await api.runner("r2", labels={"side": "b"})
    for rid, client in (a, b):
        await client.heartbeat(rid, RunnerHeartbeat.model_validate({"backupRepository": repo}))
    return a, b


async def _report(client: AsyncFlexClient, rid: str, env_id: str, *, ready: bool = False, failed: bool = False,
                  restored: bool = False, backup: str | None = None) -> None:
    """Write a status as the runner would (fresh read, observedGeneration = generation)."""
    env = await client.runner_environment(rid, env_id)
    st = env.status.model_copy(deep=True)
    gen = env.metadata.generation
    st.observed_generation = gen
    if backup is not None:
        st.last_backup = LastBackup(id=backup, state="completed")
        st.phase = "stopped"
    if restored:
        set_condition(st, "Restored", True, reason="Restored", generation=gen)
    if ready:
        set_condition(st, "Ready", True, reason="Ready", generation=gen)
        st.phase = "running"
    if failed:
        set_condition(st, "Restored", False, reason="RestoreFailed", message="the repository is unreachable",
                      generation=gen)
        st.phase, st.message = "failed", "the repository is unreachable"
    await client.update_status(env_id, EnvironmentStatus.model_validate(st.to_wire()),
                               resource_version=env.metadata.resource_version)


@pytest.fixture
async def shared(make_settings: Callable[..., Settings], tmp_path: Path) -> Any:
    async with running_app(make_settings(backup_repository=str(tmp_path / "shared"))) as api:
        yield api


async def test_a_move_goes_through_its_phases_and_both_runners_see_what_they_must(shared: Api) -> None:
    api = shared
    (ra, a), (rb, b) = await _pair(api)
    env = await api.admin.create_environment("web", SPEC)
    env_id = env.metadata.id
    assert env.status.runner_id == ra

    moving = await api.admin.move_environment("web", "r2")
    move = moving.spec.move
    assert move is not None and (move.from_, move.to, move.phase) == (ra, rb, "backup")
    assert moving.spec.backup is not None and moving.spec.backup.request == move.backup
    assert moving.status.condition("Moving").reason == "BackingUp"  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        await api.admin.move_environment("web", "r2")
    with pytest.raises(Conflict):  # no spec changes while it moves
        await api.admin.patch_environment("web", {"spec": {"env": {"A": "1"}}})
    with pytest.raises(InvalidArgument, match=r"spec\.move"):
        await api.admin.patch_environment("web", {"spec": {"move": None}})
    with pytest.raises(NotFound):  # not yet the new runner's
        await b.runner_environment(rb, env_id)

    # the old runner makes the backup: reported, then its status says so; only then is it bound to r2
    await a.report_backup(env_id, move.backup, BackupReport(state="completed", files=3, size=10))
    assert (await api.admin.get_environment("web")).spec.move.phase == "backup"  # type: ignore[union-attr]
    await _report(a, ra, env_id, backup=move.backup)
    env = await api.admin.get_environment("web")
    assert env.spec.move is not None and env.spec.move.phase == "restore" and env.status.runner_id == rb
    assert env.status.condition("Moving").reason == "Restoring"  # type: ignore[union-attr]
    assert env.status.condition("Scheduled").message == "bound to runner r2 (moved)"  # type: ignore[union-attr]
    seen_a = await a.runner_environment(ra, env_id)  # the old runner still sees it...
    assert seen_a.spec.move is not None and seen_a.spec.move.phase == "restore"
    with pytest.raises(FailedPrecondition):  # ...but no longer writes its status
        await _report(a, ra, env_id, ready=True)
    assert [e.metadata.id for e in (await a.runner_environments(ra)).items] == [env_id]
    assert [e.metadata.id for e in (await b.runner_environments(rb)).items] == [env_id]

    # r2 restores and is Ready: done; r1 removes its copy and the move is over
    await _report(b, rb, env_id, restored=True, ready=True)
    env = await api.admin.get_environment("web")
    assert env.spec.move is not None and env.spec.move.phase == "done"
    assert env.status.condition("Moving").reason == "RemovingOldCopy"  # type: ignore[union-attr]
    await a.confirm_teardown(ra, env_id)
    env = await api.admin.get_environment("web")
    assert env.spec.move is None and env.status.runner_id == rb
    assert (env.status.condition("Moving").status, env.status.condition("Moving").reason) == ("False", "Moved")  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await a.runner_environment(ra, env_id)
    listed = (await api.raw(api.admin_token).get("/api/v1/environments/web/backups")).json()["items"]
    [made] = [x for x in listed if x["reason"] == "move"]
    assert made["state"] == "completed" and made["runnerId"] == ra


async def test_a_failed_restore_rolls_the_move_back(shared: Api) -> None:
    api = shared
    (ra, a), (rb, b) = await _pair(api)
    env_id = (await api.admin.create_environment("web", SPEC)).metadata.id
    move = (await api.admin.move_environment("web", None, {"side": "b"})).spec.move
    assert move is not None and move.to == rb
    await a.report_backup(env_id, move.backup, BackupReport(state="completed"))
    await _report(a, ra, env_id, backup=move.backup)
    await _report(b, rb, env_id, failed=True)
    env = await api.admin.get_environment("web")
    assert env.spec.move is None and env.status.runner_id == ra and env.status.condition("Restored") is None
    c = env.status.condition("Moving")
    assert c is not None and (c.status, c.reason) == ("False", "MoveFailed")
    assert c.message == ("the move to runner r2 failed: the repository is unreachable; the environment stays on "
                         "runner r1"), c.message
    with pytest.raises(NotFound):
        await b.runner_environment(rb, env_id)
    await _report(a, ra, env_id, ready=True)  # r1 writes its status again
    # and the new runner going offline while it restores rolls back too (the sweep sees it)
    move = (await api.admin.move_environment("web", "r2")).spec.move
    assert move is not None
    await a.report_backup(env_id, move.backup, BackupReport(state="completed"))
    await _report(a, ra, env_id, backup=move.backup)
    api.app.state.cp.runners.heartbeat_timeout = 0.5
    for _ in range(100):
        await a.heartbeat(ra)
        env = await api.admin.get_environment("web")
        if env.spec.move is None:
            break
        await asyncio.sleep(0.1)
    assert env.spec.move is None and env.status.runner_id == ra
    assert "runner r2 went offline" in env.status.condition("Moving").message  # type: ignore[union-attr]


async def test_a_server_without_a_shared_repository_refuses_moves(api: Api) -> None:
    (ra, a), _ = await _pair(api, "own")
    await api.admin.create_environment("web", SPEC)
    with pytest.raises(FailedPrecondition, match="no shared backup repository") as err:
        await api.admin.move_environment("web", "r2")
    assert "--backup-repository" in (err.value.hint or "")
    with pytest.raises(NotFound):
        await a.runner_backup_repository(ra)


async def test_moves_are_refused_in_one_line_and_the_password_goes_only_to_runners(shared: Api) -> None:
    (ra, a), (rb, b) = await _pair(shared)
    await b.heartbeat(rb, RunnerHeartbeat(backup_repository="own"))
    await shared.admin.create_environment("web", SPEC)
    with pytest.raises(FailedPrecondition, match="runner r2 backs up into its own repository"):
        await shared.admin.move_environment("web", "r2")
    with pytest.raises(NotFound, match="not another ready runner"):
        await shared.admin.move_environment("web", "r1")
    await shared.admin.cordon_runner("r2")
    await b.heartbeat(rb, RunnerHeartbeat(backup_repository="shared"))
    with pytest.raises(FailedPrecondition, match="cordoned"):
        await shared.admin.move_environment("web", "r2")
    bob = await shared.user("bob")
    with pytest.raises(NotFound):  # someone else's environment
        await bob.move_environment("web", "r2")

    repo = await a.runner_backup_repository(ra)
    key = shared.settings.backup_repository_key
    assert repo.location == shared.settings.backup_repository and repo.password == key.read_text().strip()
    assert key.stat().st_mode & 0o777 == 0o600 and len(repo.password) >= 32
    assert repo.password not in repr(repo)
    with pytest.raises((PermissionDenied, Unauthenticated)):  # a user, even an admin, never gets it
        await shared.admin.runner_backup_repository(ra)
    with pytest.raises(PermissionDenied):  # a runner only its own (the same answer, but not as another)
        await b.runner_backup_repository(ra)
    raw = await shared.raw(shared.admin_token).get("/api/v1/environments/web")
    assert repo.password not in raw.text


async def test_drain_cordons_and_moves_every_environment_off(shared: Api) -> None:
    api = shared
    (ra, _), (rb, _) = await _pair(api)
    web = await api.admin.create_environment("web", SPEC)
    db = await api.admin.create_environment("db", SPEC)
    assert web.status.runner_id == db.status.runner_id == ra
    drained = await api.admin.drain_runner("r1")
    assert drained.cordoned is True
    for name in ("web", "db"):
        move = (await api.admin.get_environment(name)).spec.move
        assert move is not None and (move.from_, move.to, move.phase) == (ra, rb, "backup"), name
    assert "environment.move" in [e.action for e in (await api.admin.audit_events(limit=100)).items]
    again = await api.admin.drain_runner("r1")  # those already moving are left to their move
    assert again.cordoned is True


async def test_drain_names_what_cannot_move_and_moves_the_rest(shared: Api) -> None:
    api = shared
    ra, a = await api.runner("r1", labels={"side": "a"})
    rb, b = await api.runner("r2", cpus=1, labels={"side": "b"})  # room for the small one only
    for rid, client in ((ra, a), (rb, b)):
        await client.heartbeat(rid, RunnerHeartbeat.model_validate({"backupRepository": "shared"}))
    small = await api.admin.create_environment("small", SPEC)
    huge = await api.admin.create_environment("huge", {**SPEC, "resources": {**SPEC["resources"], "cpus": 2}})
    assert small.status.runner_id == huge.status.runner_id == ra
    with pytest.raises(FailedPrecondition, match=r"1 of its 2 environment\(s\) cannot move: admin/huge"):
        await api.admin.drain_runner("r1")
    assert (await api.admin.get_runner(ra)).cordoned is True
    assert (await api.admin.get_environment("small")).spec.move is not None
    assert (await api.admin.get_environment("huge")).spec.move is None
