"""The control plane's side of backups of deleted environments and of restoring anywhere (issue 17), with runners
speaking the runner API as a runner does: deleting asks for a last backup, which stays (listed to its owner only,
marked, with its expiry, restorable) while the others are due at once; a due backup goes to the runner holding
its repository, and its row goes once that runner has forgotten it; a backup in the shared repository restores
on any runner using it. SQLite and PostgreSQL (``backend``); tests/runner/test_deleted_backups.py does it with
real runners."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from flex.api import BackupReport, EnvironmentStatus, LastBackup, RunnerHeartbeat
from flex.client import AsyncFlexClient
from flex.controlplane.config import Settings
from flex.controlplane.models import BackupRow
from flex.errors import FailedPrecondition, NotFound
from tests.controlplane.conftest import Api, running_app

SPEC = {"source": {"git": "https://host/org/repo.git"}, "resources": {"cpus": 1, "memory": 2**30, "disk": 2**30}}


async def _made(client: AsyncFlexClient, env_id: str, backup_id: str, repository: str = "own") -> None:
    """The runner made the backup (its row)."""
    await client.report_backup(env_id, backup_id, BackupReport(state="completed", files=3, size=10,
                                                               repository=repository))  # type: ignore[arg-type]


async def _status_backup(client: AsyncFlexClient, rid: str, env_id: str, backup_id: str) -> None:
    env = await client.runner_environment(rid, env_id)
    st = env.status.model_copy(deep=True)
    st.observed_generation = env.metadata.generation
    st.last_backup = LastBackup(id=backup_id, state="completed", time=datetime.now(UTC))
    await client.update_status(env_id, EnvironmentStatus.model_validate(st.to_wire()),
                               resource_version=env.metadata.resource_version)


def _expire(api: Api, backup_id: str) -> None:
    """Time passes: the backup's expiry is now behind us."""
    with api.app.state.cp.store.db.write() as s:
        row = s.get(BackupRow, backup_id)
        assert row is not None and row.expires_at is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        s.add(row)


async def test_a_deleted_environment_keeps_its_last_backup_for_its_owner_until_it_expires(api: Api) -> None:
    rid, runner = await api.runner("r1")
    await runner.heartbeat(rid, RunnerHeartbeat.model_validate({"backupRepository": "own"}))
    env = await api.admin.create_environment("web", SPEC)
    env_id = env.metadata.id
    first = await api.admin.create_backup("web")
    await _made(runner, env_id, first.id)
    await _status_backup(runner, rid, env_id, first.id)

    deleting = await api.admin.delete_environment("web")  # asks for a last backup in the same write
    assert deleting.metadata.deletion_timestamp is not None and deleting.spec.backup is not None
    last_id = deleting.spec.backup.request
    assert last_id is not None and last_id != first.id
    asked = await api.admin.get_any_backup(last_id)
    assert (asked.reason, asked.state, asked.environment_deleted) == ("delete", "pending", False)
    seen = await runner.runner_environment(rid, env_id)  # the runner sees it, deleting
    assert seen.metadata.deletion_timestamp is not None and seen.spec.backup.request == last_id  # type: ignore[union-attr]
    await _made(runner, env_id, last_id)
    await runner.confirm_teardown(rid, env_id)
    with pytest.raises(NotFound):
        await api.admin.get_environment("web")

    # the last one stays, marked, a week by default; the one before is due at once, for the runner to forget
    [kept] = (await api.admin.list_all_backups()).items
    assert kept.id == last_id and kept.environment_deleted and kept.repository == "own"
    assert kept.expires_at is not None and timedelta(days=6) < kept.expires_at - datetime.now(UTC) <= timedelta(days=7)
    assert [b.id for b in (await api.admin.list_backups("web")).items] == [last_id]
    with pytest.raises(NotFound):
        await api.admin.get_any_backup(first.id)
    [due] = (await runner.runner_expired_backups(rid)).items
    assert due.id == first.id
    await runner.runner_forgot_backup(rid, first.id)
    assert (await runner.runner_expired_backups(rid)).items == []
    with pytest.raises(NotFound):  # a backup not due is not the runner's to drop
        await runner.runner_forgot_backup(rid, last_id)

    # owner-only: another user sees none of it, and cannot restore it
    bob = api.client((await api.admin.create_user("bob")).token)
    assert (await bob.list_all_backups()).items == []
    with pytest.raises(NotFound):
        await bob.get_any_backup(last_id)
    with pytest.raises(NotFound):
        await bob.restore_backup("web", last_id, "mine")

    # restorable under a new name, on the runner whose repository holds it
    copy = await api.admin.restore_backup("web", last_id, "web2")
    assert copy.spec.restore_from is not None and copy.spec.restore_from.backup == last_id
    assert copy.status.runner_id == rid

    # once expired: gone from the list, not restorable, due on its runner; its row goes once forgotten
    _expire(api, last_id)
    assert (await api.admin.list_all_backups()).items == []
    with pytest.raises(NotFound):
        await api.admin.restore_backup("web", last_id, "web3")
    assert [b.id for b in (await runner.runner_expired_backups(rid)).items] == [last_id]
    await runner.runner_forgot_backup(rid, last_id)
    with api.app.state.cp.store.db.read() as s:
        assert list(s.scalars(select(BackupRow.id).where(BackupRow.env_id == env_id))) == []


async def test_without_retention_a_delete_asks_for_no_backup_and_every_backup_is_due(
        make_settings: Callable[..., Settings]) -> None:
    async with running_app(make_settings(deleted_backup_retention="0")) as api:
        rid, runner = await api.runner("r1")
        env = await api.admin.create_environment("web", SPEC)
        b = await api.admin.create_backup("web")
        await _made(runner, env.metadata.id, b.id)
        deleting = await api.admin.delete_environment("web")
        assert deleting.spec.backup is not None and deleting.spec.backup.request == b.id
        await runner.confirm_teardown(rid, env.metadata.id)
        assert (await api.admin.list_all_backups()).items == []
        assert [d.id for d in (await runner.runner_expired_backups(rid)).items] == [b.id]


@pytest.fixture
async def shared(make_settings: Callable[..., Settings], tmp_path: Path) -> Api:  # type: ignore[misc]
    async with running_app(make_settings(backup_repository=str(tmp_path / "shared"))) as api:
        yield api


async def test_a_backup_in_the_shared_repository_restores_on_any_runner_using_it(shared: Api) -> None:
    api = shared
    runners = {}
    for name, repo in (("r1", "shared"), ("r2", "shared"), ("r3", "own")):
        rid, client = await api.runner(name, labels={"side": name})
        await client.heartbeat(rid, RunnerHeartbeat.model_validate({"backupRepository": repo}))
        runners[name] = (rid, client)
    (r1, a), (r2, _), (r3, c) = runners["r1"], runners["r2"], runners["r3"]
    env = await api.admin.create_environment("web", {**SPEC, "runnerSelector": {"side": "r1"}})
    b = await api.admin.create_backup("web")
    await _made(a, env.metadata.id, b.id, "shared")
    assert (await api.admin.get_backup("web", b.id)).repository == "shared"

    on_b = await api.admin.restore_backup("web", b.id, "on-b", runner="r2")
    assert on_b.status.runner_id == r2 and on_b.spec.runner_selector == {"side": "r1"}
    by_label = await api.admin.restore_backup("web", b.id, "by-label", selector={"side": "r2"})
    assert by_label.status.runner_id == r2 and by_label.spec.runner_selector == {"side": "r2"}
    with pytest.raises(NotFound, match="not a ready runner on the server's shared backup repository"):
        await api.admin.restore_backup("web", b.id, "on-c", runner="r3")  # backs up into its own
    with pytest.raises(FailedPrecondition, match="no runner on the shared backup repository"):
        await api.admin.restore_backup("web", b.id, "nowhere", selector={"side": "r3"})

    # a backup in a runner's own repository restores there only
    other = await api.admin.create_environment("own", {**SPEC, "runnerSelector": {"side": "r3"}})
    ob = await api.admin.create_backup("own")
    await _made(c, other.metadata.id, ob.id, "own")
    with pytest.raises(FailedPrecondition, match="only it can restore it"):
        await api.admin.restore_backup("own", ob.id, "own-b", runner="r2")
    assert (await api.admin.restore_backup("own", ob.id, "own-c")).status.runner_id == r3

    # a due backup in the shared repository is its maker's to forget; once that runner is gone, any other's on it
    await api.admin.delete_environment("web")
    deleting = await a.runner_environment(r1, env.metadata.id)
    assert deleting.spec.backup is not None and deleting.spec.backup.request is not None
    await a.report_backup(env.metadata.id, deleting.spec.backup.request, BackupReport(state="removed"))  # unchanged
    await a.confirm_teardown(r1, env.metadata.id)
    _expire(api, b.id)
    _, b_client = runners["r2"]
    assert [d.id for d in (await a.runner_expired_backups(r1)).items] == [b.id]
    assert (await b_client.runner_expired_backups(r2)).items == []
    for name in ("on-b", "by-label"):
        await api.admin.delete_environment(name, force=True)
    await api.admin.delete_runner("r1")
    assert [d.id for d in (await b_client.runner_expired_backups(r2)).items] == [b.id]
    assert (await c.runner_expired_backups(r3)).items == []  # r3 keeps its own repository
    await b_client.runner_forgot_backup(r2, b.id)
    assert (await b_client.runner_expired_backups(r2)).items == []
