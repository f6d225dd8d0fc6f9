"""Restore anywhere and moves between two runners on one machine (issue 17), root and rootless (two runners of the
test user, each with its own FLEX_HOME): a real `flex server` with a shared backup repository (a directory both
reach), real runners and containers. A backup made on r1 restores as a new environment on r2 (`flex restore
BACKUP --as NAME --to r2`), and `flex move` takes the environment itself to r2, with the workspace and the
container's writable layer (a file made, one of the image's removed); files owned by uid 1000 inside stay
1000:1000 (owners are stored as seen inside, and a rootless runner reads and writes them in its user namespace)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.api import Environment
from tests.conftest import debian_rootfs_tar, run_flex
from tests.runner.conftest import (
    USER,
    GitServer,
    Runner,
    Server,
    cond,
    devcontainer,
    remove_runner,
    start_server,
    wait_for,
)
from tests.runtime.containers.conftest import image_from_tar

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

_SMALL = {"cpus": 0.25, "memory": "256Mi", "disk": "1Gi"}
_OWNED = "cat /workspaces/{n}/notes.txt; stat -c %u:%g /workspaces/{n}/notes.txt"
# the writable layer: a file made (its owner kept) and one of the image's removed (a whiteout)
_LAYER = "cat /opt/layer.txt; stat -c %u:%g /opt/layer.txt; test -e /etc/issue && echo back || echo removed"


def _ready_on(env: Environment, runner_id: str) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation and env.status.runner_id == runner_id


def _dir_for(runner: Runner, prefix: str) -> Path:
    """A directory under /var/tmp the mode's user owns (flextest reaches none under pytest's tmp_path)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    if runner.mode.rootless:
        subprocess.run(["chown", USER, str(d)], check=True)
    return d


@contextlib.contextmanager
def _on_two_runners(runner: Runner, tmp_path: Path, image: str) -> Iterator[tuple[Server, Runner, dict[str, str]]]:
    shared = _dir_for(runner, "shared-backups-")
    other_mode = dataclasses.replace(runner.mode, home=_dir_for(runner, "home-b-"))
    other = Runner(other_mode, tmp_path / "runner-b.log")
    kind = () if runner.mode.rootless else ("--kind", "vm")
    try:
        assert image_from_tar(other_mode, debian_rootfs_tar(), image) == image
        with start_server(tmp_path, "--backup-repository", str(shared)) as server:
            runner.join(server, "--label", "side=a", *kind)
            other.join(server, "--label", "side=b", "--name", "r2", *kind)
            runner.start()
            other.start()
            deadline = time.monotonic() + 60
            while {r.name: r.backup_repository for r in server.admin.list_runners().items} != \
                    {"r1": "shared", "r2": "shared"}:
                assert time.monotonic() < deadline, server.admin.list_runners()
                time.sleep(0.3)
            try:
                yield server, other, {r.name: r.id for r in server.admin.list_runners().items}
            finally:
                for e in server.admin.list_environments().items:
                    server.admin.delete_environment(e.metadata.name, force=True)
    finally:
        remove_runner(other)
        shutil.rmtree(shared, ignore_errors=True)


def test_a_backup_restores_on_another_runner_and_an_environment_moves_there_with_its_owners(
        runner: Runner, git_server: GitServer, image: str, tmp_path: Path) -> None:
    with _on_two_runners(runner, tmp_path, image) as (server, other, ids):
        token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
        admin = ("--server", server.url, "--token", token)
        url = git_server.repo("orig", devcontainer(image))
        server.admin.create_environment("orig", {"source": {"git": url}, "resources": _SMALL,
                                                 "runnerSelector": {"side": "a"}})
        env = wait_for(server.admin, "orig", lambda e: _ready_on(e, ids["r1"]), runner)
        [ca] = runner.containers(env.metadata.id)
        runner.exec(ca["id"], "echo mine > /workspaces/orig/notes.txt && chown 1000:1000 /workspaces/orig/notes.txt "
                              "&& echo layer > /opt/layer.txt && chown 1000:1000 /opt/layer.txt && rm /etc/issue")

        r = run_flex("backup", "create", "orig", *admin)
        assert r.code == 0, (r, runner.text()[-3000:])
        [made] = json.loads(run_flex("backup", "ls", "orig", "--json", *admin).stdout)
        assert made["repository"] == "shared" and made["runnerId"] == ids["r1"], made

        # restore anywhere: a new environment from r1's backup, on r2
        r = run_flex("restore", made["id"], "--as", "there", "--to", "r2", *admin, timeout=300)
        assert r.code == 0 and "there is ready" in r.stdout, (r, other.text()[-3000:])
        there = wait_for(server.admin, "there", lambda e: _ready_on(e, ids["r2"]), other)
        assert cond(there, "Restored") == ("True", "Restored")
        assert runner.containers(there.metadata.id) == []
        [ct] = other.containers(there.metadata.id)
        assert other.exec(ct["id"], _OWNED.format(n="there")) == "mine\n1000:1000\n"
        assert other.exec(ct["id"], _LAYER) == "layer\n1000:1000\nremoved\n"

        # the environment itself moves to r2 (rootless too), and its old copy goes from r1
        r = run_flex("move", "orig", "--to", "r2", *admin, timeout=300)
        assert r.code == 0 and "orig moved to runner r2" in r.stdout, (r, other.text()[-3000:])
        moved = wait_for(server.admin, "orig", lambda e: _ready_on(e, ids["r2"]) and e.spec.move is None, other)
        assert cond(moved, "Moving") == ("False", "Moved")
        assert runner.containers(env.metadata.id) == []
        assert not (runner.mode.home / "runner" / "volumes" / env.metadata.id).exists()
        [cm] = other.containers(env.metadata.id)
        assert other.exec(cm["id"], _OWNED.format(n="orig")) == "mine\n1000:1000\n"
        assert other.exec(cm["id"], _LAYER) == "layer\n1000:1000\nremoved\n"
        assert other.exec(cm["id"], "cat /workspaces/orig/README.md") == "hello from the repository\n"
