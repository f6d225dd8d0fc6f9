"""Backups as resources of their environment (issue 17): asked for through the API, made by the runner the
environment is on, listed only to its owner, and restored into a new environment that has the workspace
(owners inside kept) and the container's writable layer. A real server, a real root runner, real containers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flex.api import Environment
from flex.client import FlexClient
from flex.errors import InvalidArgument, NotFound
from tests.conftest import run_flex
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]


def _message(env: Environment, type_: str) -> str:
    c = env.status.condition(type_)
    return c.message if c is not None else ""


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_backup_through_the_api_and_restore_as_a_new_environment(server: Server, runner: Runner,
                                                                 git_server: GitServer, image: str,
                                                                 tmp_path: Path) -> None:
    token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
    admin = ("--server", server.url, "--token", token)
    shutil.rmtree(runner.mode.home / "backups", ignore_errors=True)
    url = git_server.repo("keep", devcontainer(image))
    runner.join(server, "--kind", "vm")
    runner.start()
    server.admin.create_environment("keep", {"source": {"git": url}, "resources": {"cpus": 0.5, "memory": "256Mi",
                                                                                    "disk": "1Gi"}})
    env = wait_for(server.admin, "keep", _running, runner)
    [ctr] = runner.containers(env.metadata.id)
    runner.exec(ctr["id"], "echo mine > /workspaces/keep/notes.txt && chown 1000:1000 /workspaces/keep/notes.txt "
                           "&& echo layer > /opt/layer.txt")  # the workspace, and the writable layer

    r = run_flex("backup", "create", "keep", *admin)  # waits, showing progress
    assert r.code == 0, r.stderr
    assert "completed" in r.stderr and r.stdout.startswith("backup bk_") and " of keep: " in r.stdout, r
    [listed] = json.loads(run_flex("backup", "ls", "keep", "--json", *admin).stdout)
    asked = server.admin.get_backup("keep", listed["id"])
    env = server.admin.get_environment("keep")
    assert env.status.last_backup is not None and env.status.last_backup.id == asked.id
    assert env.status.last_backup.state == "completed" and env.spec.backup is not None
    assert cond(env, "BackedUp") == ("True", "BackedUp")
    assert env.status.last_backup is not None and env.status.last_backup.files >= 3
    [made] = server.admin.list_backups("keep").items
    assert made.id == asked.id and made.state == "completed" and made.files == env.status.last_backup.files
    assert made.size > 0 and made.completed_at is not None and made.runner_id == env.status.runner_id
    assert server.admin.get_backup("keep", asked.id) == made

    # another user sees neither the backups nor the environment
    bob_token = server.admin.create_user("bob").token
    r = run_flex("backup", "ls", "keep", "--server", server.url, "--token", bob_token)
    assert r.code == 3 and "not found" in r.stderr, r
    with FlexClient(server.url, bob_token) as bob:
        with pytest.raises(NotFound):
            bob.get_backup("keep", asked.id)
        with pytest.raises(NotFound):
            bob.restore_backup("keep", asked.id, "stolen")
    # spec.backup and spec.restoreFrom are the server's to write
    with pytest.raises(InvalidArgument, match=r"spec\.restoreFrom"):
        server.admin.patch_environment("keep", {"spec": {"restoreFrom": {"backup": asked.id}}})

    r = run_flex("restore", asked.id, "--as", "copy", *admin, timeout=300)  # waits until it is Ready
    assert r.code == 0 and "copy is ready" in r.stdout, (r, runner.text()[-3000:])
    copy = wait_for(server.admin, "copy", _running, runner)
    assert copy.spec.restore_from is not None and copy.spec.restore_from.backup == asked.id
    assert cond(copy, "Restored") == ("True", "Restored")
    [cc] = runner.containers(copy.metadata.id)
    assert runner.exec(cc["id"], "cat /workspaces/copy/notes.txt; stat -c %u:%g /workspaces/copy/notes.txt; "
                                 "cat /opt/layer.txt") == "mine\n1000:1000\nlayer\n"
    assert runner.exec(cc["id"], "cat /workspaces/copy/README.md") == "hello from the repository\n"

    # on a schedule, while it runs: the sweep asks, the runner makes it; turned off again, none come
    server.admin.patch_environment("copy", {"spec": {"backup": {"schedule": "1s"}}})
    copy = wait_for(server.admin, "copy", lambda e: e.status.last_backup is not None
                    and e.status.last_backup.state == "completed", runner)
    server.admin.patch_environment("copy", {"spec": {"backup": {"schedule": None}}})
    made_by = {b.reason for b in server.admin.list_backups("copy").items}
    assert made_by == {"schedule"}, made_by

    # a backup removed through the API leaves the list at once, and the repository at the next backup; stopping
    # backs up (on by default)
    r = run_flex("backup", "rm", asked.id, *admin)
    assert r.code == 0 and f"removed backup {asked.id} of keep" in r.stdout, r
    assert server.admin.list_backups("keep").items == []
    server.admin.stop_environment("keep")
    # retention runs after the backup (issue 14: a start never waits for it); BackedUp's message says when
    wait_for(server.admin, "keep", lambda e: e.status.phase == "stopped" and e.status.last_backup is not None
             and e.status.last_backup.id != asked.id and e.status.last_backup.state == "completed"
             and "; kept the newest 3, removed 1" in _message(e, "BackedUp"), runner)
    [on_stop] = server.admin.list_backups("keep").items
    assert on_stop.reason == "stop" and on_stop.state == "completed"
    r = run_flex("backup", "ls", "--repo", str(runner.mode.home / "backups"), "--json",
                 env={"FLEX_HOME": str(runner.mode.home)})
    assert r.code == 0, r.stderr
    assert [s["meta"]["backup"] for s in json.loads(r.stdout) if s["tags"] == [f"env:{env.metadata.id}"]] == \
        [on_stop.id]
    for name in ("keep", "copy"):
        server.admin.delete_environment(name)


def _repo_snapshots(runner: Runner, env_id: str) -> list[str]:
    r = run_flex("backup", "ls", "--repo", str(runner.mode.home / "backups"), "--json",
                 env={"FLEX_HOME": str(runner.mode.home)})
    assert r.code == 0, r.stderr
    return [s["meta"]["backup"] for s in json.loads(r.stdout) if s["tags"] == [f"env:{env_id}"]]


def _retained(env: Environment) -> bool:
    return _running(env) and cond(env, "BackedUp") == ("True", "BackedUp") and \
        "; kept the newest 3, removed 0" in _message(env, "BackedUp")


def test_a_start_after_a_stop_waits_for_the_backup_only_and_a_restart_does_not_back_up_again(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    """Issue 14: the stop's backup is made once, even when the runner is killed after reporting it and the start
    comes while it is down (BackedUp then comes from the row); a start right after a stop: one backup too."""
    url = git_server.repo("warm", devcontainer(image))
    runner.join(server)
    runner.start(crash_after="backed-up")
    server.admin.create_environment("warm", {"source": {"git": url}})
    env_id = wait_for(server.admin, "warm", _running, runner).metadata.id
    server.admin.stop_environment("warm")
    assert runner.proc is not None and runner.proc.wait(240) in (-9, 137), runner.text()[-3000:]
    [first] = server.admin.list_backups("warm").items
    was = server.admin.get_environment("warm").status.last_backup  # the kill came before the status write
    assert first.state == "completed" and was is not None and was.state == "running"
    server.admin.start_environment("warm")
    runner.start()
    env = wait_for(server.admin, "warm", _retained, runner)
    assert env.status.last_backup is not None and env.status.last_backup.id == first.id
    assert env.status.last_backup.state == "completed"
    assert [b.id for b in server.admin.list_backups("warm").items] == [first.id]
    assert _repo_snapshots(runner, env_id) == [first.id]  # not made again after the restart

    # a start at once after a stop: the stop's backup is still made, exactly once
    server.admin.stop_environment("warm")
    server.admin.start_environment("warm")
    env = wait_for(server.admin, "warm", lambda e: _retained(e) and e.status.last_backup is not None and
                   e.status.last_backup.id != first.id, runner)
    backups = server.admin.list_backups("warm").items
    assert [b.reason for b in backups] == ["stop", "stop"] and all(b.state == "completed" for b in backups)
    assert env.status.last_backup is not None and env.status.last_backup.id == backups[1].id
    assert _repo_snapshots(runner, env_id) == [first.id, backups[1].id]
    server.admin.delete_environment("warm")
    wait_gone(server.admin, "warm", runner)
