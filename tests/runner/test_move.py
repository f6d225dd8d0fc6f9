"""Moving an environment between two runners on one machine (issue 17.5): a real `flex server` with a shared
backup repository (a directory both runners reach), two real root runners with their own FLEX_HOME, real
containers. A file in the workspace, a package installed with dpkg (a .deb built inside with dpkg-deb: there is
no internet) and an image made by the inner dockerd survive the move; the old runner's copy goes only after the
environment is Ready on the new one; the old runner killed (kill -9) as the move stops the environment, and the
server killed as the new runner restores, each carry on once started again. A move to a runner killed while it
restores leaves the environment Ready on the old runner with its file; a runner with its own repository is
refused in one line."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.api import Environment
from flex.errors import Unavailable
from tests.conftest import debian_rootfs_tar, run_flex
from tests.runner.conftest import (
    GitServer,
    Runner,
    Server,
    cond,
    devcontainer,
    remove_runner,
    start_server,
    wait_for,
)
from tests.runtime.containers.conftest import image_for, image_from_tar

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]

_DOCKERD = "setsid dockerd > /var/log/dockerd.log 2>&1 < /dev/null &"
_DEB = ("mkdir -p /tmp/p/DEBIAN /tmp/p/usr/local/bin && printf '#!/bin/sh\\necho hello from a package\\n' > "
        "/tmp/p/usr/local/bin/flex-hello && chmod 755 /tmp/p/usr/local/bin/flex-hello && printf 'Package: flex-hello"
        "\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.invalid>\\nDescription: a test package\\n' > "
        "/tmp/p/DEBIAN/control && dpkg-deb --build /tmp/p /tmp/flex-hello.deb >/dev/null && dpkg -i "
        "/tmp/flex-hello.deb >/dev/null && rm -rf /tmp/p /tmp/flex-hello.deb")
_SMALL = {"cpus": 0.25, "memory": "256Mi", "disk": "2Gi"}


def _ready_on(env: Environment, runner_id: str) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation and env.status.runner_id == runner_id


def _runner_ids(server: Server) -> dict[str, str]:
    return {r.name: r.id for r in server.admin.list_runners().items}


def _wait_shared(server: Server, want: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while {r.name: r.backup_repository for r in server.admin.list_runners().items} != want:
        assert time.monotonic() < deadline, server.admin.list_runners()
        time.sleep(0.3)


class _Other(Runner):
    """r2, whose image is imported in the background (what the move needs only once it restores)."""

    imported: concurrent.futures.Future[str]

    def image_ready(self, image: str) -> None:
        assert self.imported.result(timeout=300) == image


@contextlib.contextmanager
def _two_runners(runner: Runner, server: Server, tmp_path: Path, image: str, tar: Path,
                 crash_a: str | None = None) -> Iterator[_Other]:
    """``runner`` (r1, side=a; killing itself after the step ``crash_a``) and another root runner r2 (side=b)
    with its own FLEX_HOME, importing ``image``."""
    other_mode = dataclasses.replace(runner.mode, home=Path(tempfile.mkdtemp(prefix="home-b-", dir="/var/tmp")))
    other = _Other(other_mode, tmp_path / "runner-b.log")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        other.imported = pool.submit(image_from_tar, other_mode, tar, image)
        runner.join(server, "--label", "side=a", "--kind", "vm")
        other.join(server, "--label", "side=b", "--kind", "vm", "--name", "r2")
        runner.start(crash_a)
        other.start()
        _wait_shared(server, {"r1": "shared", "r2": "shared"})
        yield other
    finally:
        pool.shutdown()
        remove_runner(other)


def _get(server: Server, name: str) -> Environment:
    """The environment, through a server restart (the first call after one may find a dead connection)."""
    for _ in range(20):
        try:
            return server.admin.get_environment(name)
        except Unavailable:
            time.sleep(0.5)
    return server.admin.get_environment(name)


def _docker(runner: Runner, cid: str, script: str) -> str:
    deadline = time.monotonic() + 60
    while runner.mode.run("exec", cid, "docker", "version").code != 0:
        assert time.monotonic() < deadline, runner.exec(cid, "tail -20 /var/log/dockerd.log")
        time.sleep(0.3)
    return runner.exec(cid, script)


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_move_keeps_files_packages_and_inner_images_and_drops_the_old_copy_after_ready(
        runner: Runner, git_server: GitServer, images: dict[str, str], workdir: Path, tmp_path: Path) -> None:
    include = ("docker.io", "iptables")
    docker_image = image_for(images, workdir, runner.mode, include=include)
    with start_server(tmp_path, "--backup-repository", str(tmp_path / "shared-backups"),
                      heartbeat_timeout=20) as server, \
            _two_runners(runner, server, tmp_path, docker_image, debian_rootfs_tar(include=include),
                         crash_a="stopped") as other:
        token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
        ids = _runner_ids(server)
        url = git_server.repo("mover", devcontainer(docker_image, postStartCommand=_DOCKERD))
        server.admin.create_environment("mover", {"source": {"git": url}, "docker": True, "resources": _SMALL,
                                                  "runnerSelector": {"side": "a"}})
        env = wait_for(server.admin, "mover", lambda e: _ready_on(e, ids["r1"])
                       and cond(e, "LifecycleReady") == ("True", "HooksDone"), runner)
        env_id = env.metadata.id
        [ca] = runner.containers(env_id)
        runner.exec(ca["id"], f"echo mine > /workspaces/mover/notes.txt && {_DEB}")
        _docker(runner, ca["id"], "cd / && tar -ch usr/bin/echo lib64 usr/lib/x86_64-linux-gnu/libc.so.6 "
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 2>/dev/null | docker import - made-inside >/dev/null")
        old_volume = runner.mode.home / "runner" / "volumes" / env_id

        other.image_ready(docker_image)
        started = time.monotonic()
        cli = subprocess.Popen([sys.executable, "-m", "flex", "move", "mover", "--to", "r2", "--server", server.url,
                                "--token", token], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the old copy is there until the environment is Ready on r2 (checked copy first, then the environment:
        # a copy gone before the read means the move had reached Ready by then)
        saw_restoring = crashed = False
        while True:
            if runner.proc is not None and runner.proc.poll() is not None:  # kill -9 once the move stopped it
                assert runner.proc.returncode == -9 and not crashed, runner.text()[-3000:]
                assert server.admin.get_environment("mover").spec.move.phase == "backup"  # type: ignore[union-attr]
                crashed = True
                runner.start()
            there = old_volume.exists()
            env = _get(server, "mover")
            moving = env.status.condition("Moving")
            if moving is not None and moving.reason == "Restoring" and not saw_restoring:
                saw_restoring = True
                server.kill_and_restart()  # kill -9 of the server mid-move: it goes on from what is stored
            if not there:
                assert moving is not None and moving.reason in ("RemovingOldCopy", "Moved"), env.status.to_wire()
                assert env.status.runner_id == ids["r2"] and cond(env, "Ready") == ("True", "Ready")
                if moving.status == "False":
                    break
            assert time.monotonic() - started < 180, (env.status.to_wire(), other.text()[-3000:])
            time.sleep(0.1)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0 and "mover moved to runner r2" in out, (out, err)
        assert crashed and saw_restoring and "BackingUp" in err and "Restoring" in err, err
        env = wait_for(server.admin, "mover", lambda e: _ready_on(e, ids["r2"]), other)  # spec.move gone: seen
        assert env.spec.move is None and cond(env, "Moving") == ("False", "Moved")
        assert runner.containers(env_id) == [] and not (runner.mode.home / "runner" / "state" / env_id).exists()
        [moved] = [b for b in server.admin.list_backups("mover").items if b.reason == "move"]
        assert moved.state == "completed" and moved.runner_id == ids["r1"]

        [cb] = other.containers(env_id)
        assert other.exec(cb["id"], "cat /workspaces/mover/notes.txt; cat /workspaces/mover/README.md") == \
            "mine\nhello from the repository\n"
        assert other.exec(cb["id"], "dpkg-query -W -f '${Status} ${Version}\\n' flex-hello; flex-hello") == \
            "install ok installed 1.0\nhello from a package\n"
        assert _docker(other, cb["id"], "docker run --rm made-inside /usr/bin/echo still here") == "still here\n"
        print(f"move with docker volume: {time.monotonic() - started:.1f} s", file=sys.stderr)
        server.admin.delete_environment("mover")
        deadline = time.monotonic() + 60
        while other.containers(env_id):
            assert time.monotonic() < deadline
            time.sleep(0.3)


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_a_failed_move_leaves_the_environment_on_its_runner(runner: Runner, git_server: GitServer, image: str,
                                                            tmp_path: Path) -> None:
    with start_server(tmp_path, "--backup-repository", str(tmp_path / "shared-backups"),
                      heartbeat_timeout=8) as server, \
            _two_runners(runner, server, tmp_path, image, debian_rootfs_tar()) as other:
        token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
        admin = ("--server", server.url, "--token", token)
        ids = _runner_ids(server)
        url = git_server.repo("stay", devcontainer(image))
        server.admin.create_environment("stay", {"source": {"git": url}, "resources": _SMALL,
                                                 "runnerSelector": {"side": "a"}})
        env = wait_for(server.admin, "stay", lambda e: _ready_on(e, ids["r1"]), runner)
        env_id = env.metadata.id
        [ca] = runner.containers(env_id)
        runner.exec(ca["id"], "echo mine > /workspaces/stay/notes.txt")

        # a runner keeping its own repository could not read the backup: refused, one line and a hint
        other.stop()
        other.start(env={"FLEX_BACKUP_REPO": str(other.mode.home / "own-backups")})
        _wait_shared(server, {"r1": "shared", "r2": "own"})
        r = run_flex("move", "stay", "--to", "r2", *admin)
        assert r.code == 1 and r.stderr.startswith("error: runner r2 backs up into its own repository"), r
        assert "hint: " in r.stderr and "--backup-repository" in r.stderr and "Traceback" not in r.stderr, r
        assert server.admin.get_environment("stay").spec.move is None

        other.image_ready(image)
        # the target killed (kill -9) as it starts restoring: offline, the move rolls back, r1 starts it again
        other.stop()
        other.start(crash_after="restore-started")
        _wait_shared(server, {"r1": "shared", "r2": "shared"})
        started = time.monotonic()
        r = run_flex("move", "stay", *admin)
        assert r.code == 2 and r.stderr.startswith("error: give --to RUNNER or --selector KEY=VALUE"), r
        r = run_flex("move", "stay", "--selector", "side=b", *admin, timeout=180)
        assert other.proc is not None and other.proc.wait(5) == -9
        assert r.code == 1 and "the move to runner r2 failed: runner r2 went offline" in r.stderr, r
        assert "stays on runner" in r.stderr and "Traceback" not in r.stderr, r
        env = wait_for(server.admin, "stay", lambda e: _ready_on(e, ids["r1"]), runner)
        assert env.spec.move is None and cond(env, "Moving") == ("False", "MoveFailed")
        [again] = runner.containers(env_id)
        assert again["id"] == ca["id"] and runner.exec(again["id"], "cat /workspaces/stay/notes.txt") == "mine\n"
        print(f"failed move rolled back in {time.monotonic() - started:.1f} s", file=sys.stderr)

        # back again, r2 removes what it had begun to restore, and the environment stays on r1
        other.start()
        deadline = time.monotonic() + 60
        while (other.mode.home / "runner" / "volumes" / env_id).exists():
            assert time.monotonic() < deadline, other.text()[-3000:]
            time.sleep(0.3)
        assert other.containers(env_id) == []
        assert _ready_on(server.admin.get_environment("stay"), ids["r1"])
