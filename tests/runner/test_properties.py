"""devcontainer.json properties a runner honours, end to end (real server, runner, containers; root and
rootless): remoteEnv (with ${containerEnv:...}), mounts (a runner volume, a bind from the workspace; a host
path refused on a VM runner), appPort/forwardPorts into status.ports, capAdd and securityOpt inside the user
namespace, init, hostRequirements, and the hook log in FLEX_HOME/runner/logs/<env id>/hooks.log."""

from __future__ import annotations

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

_CAP_SYS_PTRACE = 1 << 19


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone") and \
        env.status.observed_generation == env.metadata.generation


def _failed(env: Environment) -> bool:
    return env.status.phase == "failed" and env.status.observed_generation == env.metadata.generation


def test_properties_env_mounts_ports_privileges_and_host_requirements(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    files = devcontainer(
        image, remoteEnv={"GREETING": "from-remote", "PATH": "/opt/tools:${containerEnv:PATH}"},
        mounts=["source=cache,target=/cache,type=volume",
                {"source": "${localWorkspaceFolder}/data", "target": "/data", "type": "bind"}],
        appPort=[8081], forwardPorts=[3000, "localhost:5000"], capAdd=["SYS_PTRACE"],
        securityOpt=["no-new-privileges"], init=True,
        postCreateCommand="echo $GREETING > /var/tmp/greeting; echo $PATH > /var/tmp/path; "
                          "echo cached >> /cache/x; cat /data/hello.txt > /var/tmp/data; echo to-the-log")
    files["data/hello.txt"] = "from the workspace\n"
    url = git_server.repo("props", files)
    big = git_server.repo("big", devcontainer(image, hostRequirements={"cpus": 4096, "memory": "64tb"}))
    hostbind = git_server.repo("hostbind", devcontainer(image, mounts=["source=/etc,target=/host-etc,type=bind"]))
    runner.join(server, "--kind", "vm")
    runner.start()
    for name, u in (("props", url), ("big", big), ("hostbind", hostbind)):
        server.admin.create_environment(name, {"source": {"git": u}, "resources": {"cpus": 0.25, "memory": "256Mi",
                                                                                  "disk": "1Gi"}})
    env = wait_for(server.admin, "props", _running, runner)
    env_id = env.metadata.id
    assert [p.port for p in env.status.ports] == [3000, 5000, 8081]
    [ctr] = runner.containers(env_id)
    cid = ctr["id"]
    assert runner.exec(cid, "cat /var/tmp/greeting /var/tmp/data /cache/x") == \
        "from-remote\nfrom the workspace\ncached\n"
    path = runner.exec(cid, "cat /var/tmp/path").strip().split(":")
    assert path[0] == "/opt/tools" and "/usr/bin" in path  # the container's PATH after remoteEnv's part
    status = dict(line.split(":\t", 1) for line in runner.exec(cid, "cat /proc/1/status").splitlines()
                  if ":\t" in line)
    assert int(status["CapBnd"], 16) & _CAP_SYS_PTRACE and int(status["CapEff"], 16) & _CAP_SYS_PTRACE
    assert status["NoNewPrivs"].strip() == "1"
    assert runner.exec(cid, "tr '\\0' ' ' < /proc/1/cmdline").startswith("/dev/init ")  # init: an init reaps
    log = runner.mode.home / "runner" / "logs" / env_id / "hooks.log"
    assert "--- postCreateCommand (exit 0)\nto-the-log\n" in log.read_text()
    assert (runner.mode.home / "runner" / "volumes" / env_id / ".volumes" / "cache" / "x").exists()

    # the volume mount outlives the container: a recreate (new env) sees it, and its hook appends
    server.admin.patch_environment("props", {"spec": {"env": {"AGAIN": "1"}}})
    wait_for(server.admin, "props", lambda e: _running(e) and runner.containers(env_id)[0]["id"] != cid, runner)
    [ctr] = runner.containers(env_id)
    assert runner.exec(ctr["id"], "cat /cache/x") == "cached\ncached\n"

    env = wait_for(server.admin, "big", _failed, runner)
    c = env.status.condition("ContainerReady")
    assert c is not None and c.reason == "HostRequirementsNotMet" and "4096 CPUs wanted" in c.message
    assert runner.containers(env.metadata.id) == []
    env = wait_for(server.admin, "hostbind", _failed, runner)
    c = env.status.condition("ContainerReady")
    assert c is not None and c.reason == "MountNotAllowed" and "inside the workspace" in c.message
    assert runner.containers(env.metadata.id) == []

    for name in ("props", "big", "hostbind"):
        server.admin.delete_environment(name)
    for name in ("props", "big", "hostbind"):
        wait_gone(server.admin, name, runner)
    assert not log.parent.exists()  # delete leaves no logs behind either
