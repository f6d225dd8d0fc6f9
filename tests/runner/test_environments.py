"""Environments end to end: a real `flex server`, real `flex runner run` processes (root and rootless), a
real git server, real containers. What a user sees: phases, conditions, the container, its files."""

from __future__ import annotations

import signal
import time

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

HOOKS = {
    "onCreateCommand": "echo oncreate >> /var/tmp/hooks.log",
    "updateContentCommand": ["sh", "-c", "echo update >> /var/tmp/hooks.log"],
    "postCreateCommand": "echo postcreate >> /var/tmp/hooks.log; pwd > /var/tmp/cwd; echo \"$SEEN\" > /var/tmp/seen",
    "postStartCommand": {"one": "echo poststart >> /var/tmp/starts.log", "two": ["true"]},
}


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        cond(env, "LifecycleReady") == ("True", "HooksDone") and env.status.observed_generation == \
        env.metadata.generation


def _create(server: Server, name: str, url: str, **spec: object) -> Environment:
    return server.admin.create_environment(name, {"source": {"git": url}, "resources": {"cpus": 0.5,
                                                  "memory": "512Mi", "disk": "1Gi"}, **spec})


def _eventually(runner: Runner, cid: str, script: str, want: str) -> str:
    """What ``script`` prints in the container once it prints ``want`` (or after 60 s). Ready comes after
    waitFor (updateContentCommand): postStartCommand may still be running then, as the spec has it."""
    deadline = time.monotonic() + 60
    while (got := runner.exec(cid, script)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_a_git_environment_runs_hooks_once_survives_restart_stop_start_and_delete(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    url = git_server.repo("app", devcontainer(image, containerEnv={"GREETING": "hi"}, forwardPorts=[3000],
                                              remoteEnv={"SEEN": "${containerEnv:GREETING}"},
                                              **HOOKS))
    runner.join(server)
    runner.start()
    env = _create(server, "app", url)
    env = wait_for(server.admin, "app", _running, runner)
    env_id = env.metadata.id
    for c in ("VolumeReady", "SourceReady", "ImageReady", "ContainerReady"):
        assert cond(env, c) is not None and cond(env, c)[0] == "True", env.status.to_wire()  # type: ignore[index]
    assert [p.port for p in env.status.ports] == [3000]
    [ctr] = runner.containers(env_id)
    assert ctr["labels"]["flex.dev/environment"] == env_id and ctr["state"] == "running"
    assert ctr["labels"]["flex.dev/generation"] == str(env.metadata.generation)
    cid = ctr["id"]
    # the workspace volume holds the clone, bind-mounted at /workspaces/<name>
    assert (runner.mode.home / "runner" / "volumes" / env_id / "app" / "README.md").read_text() == \
        "hello from the repository\n"
    assert runner.exec(cid, "cat /workspaces/app/README.md; echo $GREETING; cat /var/tmp/cwd") == \
        "hello from the repository\nhi\n/workspaces/app\n"
    assert runner.exec(cid, "cat /var/tmp/hooks.log") == "oncreate\nupdate\npostcreate\n"
    # hooks see remoteEnv over the user's shell's environment (userEnvProbe, run before the first hook)
    assert runner.exec(cid, "cat /var/tmp/seen") == "hi\n"
    assert _eventually(runner, cid, "cat /var/tmp/starts.log", "poststart\n") == "poststart\n"
    r = runner.cli("runner", "status", "--json")
    assert r.returncode == 0 and '"running": true' in r.stdout

    # restarting the runner neither stops the container nor repeats a hook
    assert runner.stop(signal.SIGTERM) == 0
    assert runner.containers(env_id)[0]["state"] == "running"
    restarted = time.time()
    runner.start()
    runner.wait_reconciled(env_id, after=restarted)
    assert runner.exec(cid, "cat /var/tmp/hooks.log; cat /var/tmp/starts.log") == \
        "oncreate\nupdate\npostcreate\npoststart\n"

    # stop keeps the writable layer; start runs postStart again, and nothing else
    runner.exec(cid, "echo kept > /etc/written-in-the-layer")
    env = server.admin.stop_environment("app")
    env = wait_for(server.admin, "app", lambda e: e.status.phase == "stopped" and
                   e.status.observed_generation == e.metadata.generation, runner)
    assert cond(env, "Ready") == ("False", "Stopped")
    assert [c["state"] for c in runner.containers(env_id)] == ["stopped"]
    server.admin.start_environment("app")
    wait_for(server.admin, "app", _running, runner)
    [again] = runner.containers(env_id)
    assert again["id"] == cid
    want = "kept\noncreate\nupdate\npostcreate\npoststart\npoststart\n"
    script = "cat /etc/written-in-the-layer /var/tmp/hooks.log /var/tmp/starts.log"
    assert _eventually(runner, cid, script, want) == want

    # delete removes container and volume, and frees the name
    server.admin.delete_environment("app")
    wait_gone(server.admin, "app", runner)
    assert runner.containers(env_id) == []
    assert not (runner.mode.home / "runner" / "volumes" / env_id).exists()
    assert not (runner.mode.home / "runner" / "state" / env_id).exists()
    again_env = _create(server, "app", url, desiredPhase="stopped")
    assert again_env.metadata.id != env_id
    wait_for(server.admin, "app", lambda e: e.status.phase == "stopped", runner)
    server.admin.delete_environment("app")
    wait_gone(server.admin, "app", runner)


def test_a_failing_hook_says_which_with_its_exit_code(server: Server, runner: Runner, git_server: GitServer,
                                                     image: str) -> None:
    url = git_server.repo("broken", devcontainer(image, onCreateCommand="echo npm went wrong >&2; exit 3",
                                                 postCreateCommand="echo never > /var/tmp/post"))
    runner.join(server)
    runner.start()
    _create(server, "broken", url)
    env = wait_for(server.admin, "broken", lambda e: e.status.phase == "failed", runner)
    c = env.status.condition("LifecycleReady")
    assert c is not None and c.status == "False" and c.reason == "OnCreateCommandFailed"
    assert "onCreateCommand exited with code 3" in c.message and "npm went wrong" in c.message
    assert cond(env, "Ready") == ("False", "OnCreateCommandFailed")
    assert cond(env, "ContainerReady") == ("True", "Running")
    [ctr] = runner.containers(env.metadata.id)
    assert runner.mode.run("exec", ctr["id"], "test", "-e", "/var/tmp/post").code == 1  # later hooks did not run
    server.admin.delete_environment("broken")
    wait_gone(server.admin, "broken", runner)


def test_compose_configs_say_not_supported(server: Server, runner: Runner, git_server: GitServer,
                                          image: str) -> None:
    composed = git_server.repo("composed", {".devcontainer.json": '{"dockerComposeFile": "c.yml", '
                                            '"service": "app", "workspaceFolder": "/w"}'})
    runner.join(server)
    runner.start(None, "--resync", "1")  # (the last --resync wins) a resync a second: the check below sees some
    _create(server, "composed", composed)
    env = wait_for(server.admin, "composed", lambda e: e.status.phase == "failed", runner)
    c = env.status.condition("ImageReady")
    assert c is not None and c.reason == "ComposeNotSupported" and "not supported yet" in c.message
    assert runner.containers(env.metadata.id) == []
    # a failed environment is not written again and again: its resourceVersion stays put across resyncs
    before = server.admin.get_environment("composed").metadata.resource_version
    runner.wait_reconciled(env.metadata.id, after=time.time() + 2.5)
    assert server.admin.get_environment("composed").metadata.resource_version == before
    server.admin.delete_environment("composed")
    wait_gone(server.admin, "composed", runner)


def test_a_runner_killed_mid_way_converges_with_exactly_one_container(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    url = git_server.repo("slow", devcontainer(image, onCreateCommand="sleep 4; echo done >> /var/tmp/oncreate"))
    runner.join(server)
    runner.start()
    _create(server, "slow", url)
    # killed while the container exists and its first hook runs
    wait_for(server.admin, "slow", lambda e: cond(e, "ContainerReady") == ("True", "Running"), runner)
    runner.stop(signal.SIGKILL)
    runner.start()
    env = wait_for(server.admin, "slow", _running, runner)
    [ctr] = runner.containers(env.metadata.id)
    assert runner.exec(ctr["id"], "cat /var/tmp/oncreate").startswith("done\n")
    server.admin.delete_environment("slow")
    wait_gone(server.admin, "slow", runner)
