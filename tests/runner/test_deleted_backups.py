"""A deleted environment's last backup (issue 17), with a real `flex server` and a real runner, root and rootless:
deleting makes a last backup before the teardown (the container stopped first), which `flex backup ls` lists to
its owner as from a deleted environment with its expiry (a kill -9 of the runner between that backup and the
teardown makes no second one), `flex restore BACKUP --as NAME` restores (a file owned
by uid 1000 inside stays so), and the runner forgets from its repository once it is due. An environment stopped
(and so backed up) and deleted unchanged gets no second backup: the stop's is the one kept."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from flex.api import Environment
from flex.errors import NotFound
from tests.conftest import run_flex
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]

_SMALL = {"cpus": 0.25, "memory": "256Mi", "disk": "1Gi"}


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation


def _snapshots(runner: Runner) -> list[str]:
    """The control plane's backup ids of the snapshots in the runner's own repository."""
    r = run_flex("backup", "ls", "--repo", str(runner.mode.home / "backups"), "--json",
                 "--password-file", str(runner.mode.home / "backup.key"))
    assert r.code == 0, r.stderr
    return [s["meta"].get("backup") for s in json.loads(r.stdout)]


def test_the_last_backup_of_a_deleted_environment_is_kept_restorable_and_forgotten_once_due(
        server: Server, runner: Runner, git_server: GitServer, image: str, tmp_path: Path) -> None:
    token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
    admin = ("--server", server.url, "--token", token)
    url = git_server.repo("gone", devcontainer(image))
    runner.join(server, *(() if runner.mode.rootless else ("--kind", "vm")))
    runner.start()
    server.admin.create_environment("gone", {"source": {"git": url}, "resources": _SMALL})
    env = wait_for(server.admin, "gone", _running, runner)
    [ctr] = runner.containers(env.metadata.id)
    runner.exec(ctr["id"], "echo mine > /workspaces/gone/notes.txt && chown 1000:1000 /workspaces/gone/notes.txt")

    # kill -9 of the runner right after the last backup, before the teardown: started again, it tears down
    # without a second backup
    runner.stop()
    runner.start(crash_after="deleted-backup")
    r = run_flex("rm", "gone", *admin)
    assert r.code == 0 and "deleting gone" in r.stdout, r
    assert runner.proc is not None and runner.proc.wait(240) in (-9, 137), runner.text()[-3000:]
    assert (runner.mode.home / "runner" / "volumes" / env.metadata.id).exists()
    runner.start()
    wait_gone(server.admin, "gone", runner)
    assert runner.containers(env.metadata.id) == []
    assert not (runner.mode.home / "runner" / "volumes" / env.metadata.id).exists()

    r = run_flex("backup", "ls", "--json", *admin)
    assert r.code == 0, r.stderr
    [kept] = json.loads(r.stdout)
    assert (kept["environment"], kept["reason"], kept["state"], kept["environmentDeleted"]) == \
        ("gone", "delete", "completed", True), kept
    assert kept["expiresAt"] and kept["files"] >= 2
    r = run_flex("backup", "ls", *admin)
    assert "deleted, kept until" in r.stdout and kept["id"] in r.stdout, r
    bob = server.admin.create_user("bob").token
    r = run_flex("backup", "ls", "--json", "--server", server.url, "--token", bob)
    assert r.code == 0 and json.loads(r.stdout) == [], r
    r = run_flex("restore", kept["id"], "--as", "stolen", "--server", server.url, "--token", bob)
    assert r.code == 3 and "not found" in r.stderr, r

    r = run_flex("restore", kept["id"], "--as", "back", *admin, timeout=300)
    assert r.code == 0 and "back is ready" in r.stdout, (r, runner.text()[-3000:])
    back = wait_for(server.admin, "back", _running, runner)
    [cb] = runner.containers(back.metadata.id)
    assert runner.exec(cb["id"], "cat /workspaces/back/notes.txt; stat -c %u:%g /workspaces/back/notes.txt") == \
        "mine\n1000:1000\n"

    # stopped (a backup on stop), then deleted unchanged: no second backup, the stop's is kept
    server.admin.stop_environment("back")
    stopped = wait_for(server.admin, "back", lambda e: e.status.phase == "stopped" and e.status.last_backup is not
                       None and e.status.last_backup.state == "completed", runner)
    assert stopped.status.last_backup is not None
    server.admin.delete_environment("back")
    wait_gone(server.admin, "back", runner)
    of_back = [b for b in server.admin.list_all_backups().items if b.environment_id == back.metadata.id]
    assert [(b.id, b.reason, b.environment_deleted) for b in of_back] == \
        [(stopped.status.last_backup.id, "stop", True)], of_back

    # due (time passes: its expiry is put behind us in the server's database): the runner forgets the snapshot
    # at its next resync, then the row goes
    assert kept["id"] in _snapshots(runner)
    with sqlite3.connect(tmp_path / "server-home" / "server" / "flex.db") as db:
        db.execute("UPDATE backups SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (kept["id"],))
    with pytest.raises(NotFound):
        server.admin.get_any_backup(kept["id"])
    deadline = time.monotonic() + 120
    while True:
        with sqlite3.connect(tmp_path / "server-home" / "server" / "flex.db") as db:
            rows = db.execute("SELECT count(*) FROM backups WHERE id = ?", (kept["id"],)).fetchone()[0]
        if rows == 0:
            break
        assert time.monotonic() < deadline, runner.text()[-3000:]
        time.sleep(0.5)
    left = _snapshots(runner)
    assert kept["id"] not in left and stopped.status.last_backup.id in left, left
    r = run_flex("backup", "verify", "--repo", str(runner.mode.home / "backups"),
                 "--password-file", str(runner.mode.home / "backup.key"))
    assert r.code == 0, r
