"""Nested Docker's /var/lib/docker is a volume of the environment: an image made by the inner dockerd is
still there after the container is recreated (a changed env), as a Codespaces user expects of
docker-in-docker. Real `flex server`, real `flex runner run` (root and rootless), Debian with docker.io."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, image_for, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.slow, pytest.mark.timeout(900)]

# dockerd in its own session, so the hook's exec ending does not end it
_DOCKERD = "setsid dockerd > /var/log/dockerd.log 2>&1 < /dev/null &"


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone") and \
        env.status.observed_generation == env.metadata.generation


def _docker(runner: Runner, cid: str, script: str) -> str:
    deadline = time.monotonic() + 90
    while runner.mode.run("exec", cid, "docker", "version").code != 0:
        assert time.monotonic() < deadline, runner.exec(cid, "tail -20 /var/log/dockerd.log")
        time.sleep(0.3)
    return runner.exec(cid, script)


def test_inner_docker_images_survive_a_recreate(server: Server, runner: Runner, git_server: GitServer,
                                                images: dict[str, str], workdir: Path) -> None:
    docker_image = image_for(images, workdir, runner.mode, include=("docker.io", "iptables"))
    url = git_server.repo("dind", devcontainer(docker_image, postStartCommand=_DOCKERD))
    runner.join(server, "--kind", "vm")
    runner.start()
    server.admin.create_environment("dind", {"source": {"git": url}, "docker": True})
    env = wait_for(server.admin, "dind", _running, runner)
    env_id = env.metadata.id
    [ctr] = runner.containers(env_id)
    # a one-file image made inside (no registry needed): echo and what it links
    _docker(runner, ctr["id"], "cd / && tar -ch usr/bin/echo lib64 usr/lib/x86_64-linux-gnu/libc.so.6 "
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 2>/dev/null | docker import - made-inside >/dev/null")
    assert (runner.mode.home / "runner" / "volumes" / env_id / ".volumes" / "docker").is_dir()

    server.admin.patch_environment("dind", {"spec": {"env": {"AGAIN": "1"}}})
    wait_for(server.admin, "dind", lambda e: _running(e) and runner.containers(env_id)[0]["id"] != ctr["id"],
             runner)
    [again] = runner.containers(env_id)
    assert _docker(runner, again["id"], "docker run --rm made-inside /usr/bin/echo still here") == "still here\n"
    server.admin.delete_environment("dind")
    wait_gone(server.admin, "dind", runner)
