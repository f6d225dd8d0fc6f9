"""A Dockerfile + features devcontainer reaching Ready on a real runner (root and rootless): the image is
built by the runner (phase building, output in FLEX_HOME/runner/logs/<id>/build.log), the features ran,
their containerEnv is in the container, their hooks ran before the config's; a failing feature install
is an ImageReady condition naming the step, with the output's tail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]


def _repo(image: str, install: str) -> dict[str, str]:
    feature = {"id": "greet", "version": "1.0.0", "options": {"word": {"type": "string", "default": "hi"}},
               "containerEnv": {"GREET_HOME": "/opt/greet"},
               "postCreateCommand": "echo feature-hook >> /var/tmp/hooks.log"}
    config = {"build": {"dockerfile": "Dockerfile"}, "features": {"./greet": {"word": "hello"}},
              "postCreateCommand": "echo config-hook >> /var/tmp/hooks.log"}
    return {".devcontainer/devcontainer.json": json.dumps(config),
            ".devcontainer/Dockerfile": f"FROM {image}\nRUN echo built > /built\n",
            ".devcontainer/greet/devcontainer-feature.json": json.dumps(feature),
            ".devcontainer/greet/install.sh": "#!/bin/sh\nset -e\n" + install,
            "README.md": "hello\n"}


def _build_span(log: Path) -> tuple[str, str]:
    """When the (one) build in ``log`` started and ended, from its "=== build of generation" lines."""
    times = re.findall(r"^=== build of generation \d+ (?:ended )?at (\S+)", log.read_text(), re.MULTILINE)
    assert len(times) == 2, log.read_text()[-2000:]
    return times[0], times[1]


def _ready(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone")


def test_dockerfile_and_features_reach_ready(server: Server, runner: Runner, git_server: GitServer,
                                            image: str) -> None:
    url = git_server.repo("featured", _repo(image, 'echo "$WORD from greet" > /greet.txt\n'))
    bad = git_server.repo("badfeature", _repo(image, "echo apt exploded >&2\nexit 4\n"))
    runner.join(server)
    runner.start()
    spec = {"resources": {"cpus": 0.5, "memory": "512Mi", "disk": "1Gi"}}
    server.admin.create_environment("featured", {"source": {"git": url}, **spec})
    server.admin.create_environment("badfeature", {"source": {"git": bad}, **spec})
    env = wait_for(server.admin, "featured", _ready, runner)
    assert cond(env, "ImageReady") == ("True", "Built")
    [ctr] = runner.containers(env.metadata.id)
    cid = ctr["id"]
    assert runner.exec(cid, "cat /built /greet.txt; echo $GREET_HOME") == "built\nhello from greet\n/opt/greet\n"
    assert runner.exec(cid, "cat /var/tmp/hooks.log") == "feature-hook\nconfig-hook\n"
    log = runner.mode.home / "runner" / "logs" / env.metadata.id / "build.log"
    assert "Feature       : Unknown" in log.read_text() or "greet" in log.read_text()

    env = wait_for(server.admin, "badfeature", lambda e: e.status.phase == "failed", runner)
    c = env.status.condition("ImageReady")
    assert c is not None and (c.status, c.reason) == ("False", "BuildFailed")
    assert "greet_0" in c.message and "apt exploded" in c.message
    assert runner.containers(env.metadata.id) == []
    # --max-builds (default 1): the two builds ran one after the other, as their build.log lines say
    spans = sorted(_build_span(runner.mode.home / "runner" / "logs" / e.metadata.id / "build.log")
                   for e in (server.admin.get_environment("featured"), env))
    assert spans[0][1] <= spans[1][0], f"the builds overlapped: {spans}"
    for name in ("featured", "badfeature"):
        server.admin.delete_environment(name)
        wait_gone(server.admin, name, runner)
