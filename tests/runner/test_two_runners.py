"""Two runners on one machine, each with its own FLEX_HOME (what moving environments between runners needs):
each makes and tears down only its own environments, and neither disturbs the other's containers."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import pytest

from flex.api import Environment
from tests.conftest import debian_rootfs_tar
from tests.runner.conftest import (
    GitServer,
    Runner,
    Server,
    cond,
    devcontainer,
    remove_runner,
    wait_for,
    wait_gone,
)
from tests.runtime.containers.conftest import image_from_tar

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation


def test_two_runners_with_separate_homes_keep_to_their_own(server: Server, runner: Runner, git_server: GitServer,
                                                           image: str, tmp_path: Path) -> None:
    if runner.mode.rootless:
        pytest.skip("two root runners share the machine's id pool and networks; a rootless one has its own")
    other_mode = dataclasses.replace(runner.mode, home=Path(tempfile.mkdtemp(prefix="home-b-", dir="/var/tmp")))
    other = Runner(other_mode, tmp_path / "runner-b.log")
    try:
        assert image_from_tar(other_mode, debian_rootfs_tar(), "flextest/minbase:1") == image
        url = git_server.repo("two", devcontainer(image))
        runner.join(server, "--label", "side=a", "--kind", "vm")
        other.join(server, "--label", "side=b", "--kind", "vm", "--name", "r2")
        runner.start()
        other.start()
        for name, side in (("env-a", "a"), ("env-b", "b")):
            server.admin.create_environment(name, {"source": {"git": url}, "runnerSelector": {"side": side},
                                                   "resources": {"cpus": 0.25, "memory": "256Mi", "disk": "1Gi"}})
        a = wait_for(server.admin, "env-a", _running, runner)
        b = wait_for(server.admin, "env-b", _running, other)
        assert a.status.runner_id != b.status.runner_id
        [ca] = runner.containers(a.metadata.id)
        [cb] = other.containers(b.metadata.id)
        assert runner.containers(b.metadata.id) == [] and other.containers(a.metadata.id) == []
        assert (runner.mode.home / "runner" / "volumes" / a.metadata.id).is_dir()
        assert not (runner.mode.home / "runner" / "volumes" / b.metadata.id).exists()

        # a's delete (and every resync of both) leaves b alone
        server.admin.delete_environment("env-a")
        wait_gone(server.admin, "env-a", runner)
        other.wait_reconciled(b.metadata.id, after=time.time() + 1)
        assert [c["id"] for c in other.containers(b.metadata.id)] == [cb["id"]]
        assert other.containers(b.metadata.id)[0]["state"] == "running"
        assert runner.containers(a.metadata.id) == [] and ca["id"] != cb["id"]
        assert other.exec(cb["id"], "cat /workspaces/env-b/README.md") == "hello from the repository\n"
        server.admin.delete_environment("env-b")
        wait_gone(server.admin, "env-b", other)
    finally:
        remove_runner(other)
