"""kill -9 of the runner at the step boundaries of create, start, recreate, stop and delete (the runner
SIGKILLs itself right after the step named by FLEX_RUNNER_CRASH_AFTER), then a restart: exactly one
container, the desired state, and nothing left behind after delete (bundles, cgroups, volumes, state)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, crashed, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone") and \
        env.status.observed_generation == env.metadata.generation


def test_kill_9_at_each_step_boundary_converges_with_one_container_and_no_leaks(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    url = git_server.repo("crash", devcontainer(image, onCreateCommand="echo made >> /var/tmp/made"))
    runner.join(server, "--kind", "vm")
    home = runner.mode.home

    def one_container(env_id: str) -> dict[str, object]:
        cs = runner.containers(env_id)
        assert len(cs) == 1, cs
        return cs[0]

    # create: killed once the container exists, before it starts
    runner.start(crash_after="created")
    server.admin.create_environment("crash", {"source": {"git": url}})
    crashed(runner)
    runner.start(crash_after="started")  # then killed right after the start, before any hook
    crashed(runner)
    runner.start()
    env = wait_for(server.admin, "crash", _running, runner)
    env_id = env.metadata.id
    first = one_container(env_id)
    assert runner.exec(str(first["id"]), "cat /var/tmp/made") == "made\n"
    runner.exec(str(first["id"]), "echo synced > /workspaces/crash/kept && sync")

    # recreate: killed between removing the old container and making the new one
    runner.stop()
    runner.start(crash_after="recreate-removed")
    server.admin.patch_environment("crash", {"spec": {"env": {"V": "2"}}})
    crashed(runner)
    assert runner.containers(env_id) == []
    runner.start()
    wait_for(server.admin, "crash", lambda e: _running(e) and runner.containers(env_id)[0]["id"] != first["id"],
             runner)
    second = one_container(env_id)
    assert runner.exec(str(second["id"]), "echo $V; cat /workspaces/crash/kept /var/tmp/made") == \
        "2\nsynced\nmade\n"

    # stop: killed after the container stopped, before the status says so
    runner.stop()
    runner.start(crash_after="stopped")
    server.admin.stop_environment("crash")
    crashed(runner)
    runner.start()
    wait_for(server.admin, "crash", lambda e: e.status.phase == "stopped" and
             e.status.observed_generation == e.metadata.generation, runner)
    assert one_container(env_id)["state"] == "stopped"

    # delete: killed after the container went, before the volume and state
    runner.stop()
    runner.start(crash_after="teardown-containers")
    server.admin.delete_environment("crash")
    crashed(runner)
    assert (home / "runner" / "volumes" / env_id).exists()
    runner.start()
    wait_gone(server.admin, "crash", runner)
    assert runner.containers(env_id) == []
    for gone in (home / "runner" / "volumes" / env_id, home / "runner" / "state" / env_id,
                 home / "containers" / str(second["id"]), home / "runner" / "logs" / env_id):
        assert not gone.exists(), gone
    cg = second.get("cgroup")
    if isinstance(cg, str):
        assert not (Path("/sys/fs/cgroup/cpu") / cg.strip("/")).exists()


def _tree(roots: set[int]) -> set[int]:
    """``roots`` and every descendant, from /proc (the monitors are nobody's children: setsid, double fork)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out = {p for p in roots if p in parents}
    while True:
        more = {p for p, pp in parents.items() if pp in out} - out
        if not more:
            return out
        out |= more


def _host_state(home: Path) -> tuple[int, list[str]]:
    """What a container holds on the host: mounts under its FLEX_HOME, and network namespaces."""
    mounts = sum(str(home) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    netns = sorted(p.name for p in Path("/run/netns").iterdir()) if Path("/run/netns").is_dir() else []
    return mounts, netns


def test_kill_9_of_the_runner_and_every_container_brings_the_environment_back_with_its_volumes(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    """A machine crash as far as flex can simulate one: SIGKILL of the runner, every container's monitor
    and processes, and (rootless) the user-namespace keeper; then the runner alone is started again."""
    url = git_server.repo("mc", devcontainer(image, postStartCommand="echo started >> /var/tmp/starts",
                                             mounts=["source=data,target=/data,type=volume"]))
    runner.join(server, "--kind", "vm")
    runner.start()
    server.admin.create_environment("mc", {"source": {"git": url}})
    env = wait_for(server.admin, "mc", _running, runner)
    env_id = env.metadata.id
    [ctr] = runner.containers(env_id)
    runner.exec(str(ctr["id"]), "echo ws > /workspaces/mc/kept; echo vol > /data/kept; echo layer > /etc/kept; sync")
    assert runner.exec(str(ctr["id"]), "cat /var/tmp/starts") == "started\n"
    home = runner.mode.home
    before = _host_state(home)

    keeper = home / "run" / "userns.pid"
    pid = int(ctr["pid"])
    monitor = int((Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[1])  # its subreaper
    roots = {monitor, pid}
    if runner.mode.rootless and keeper.exists():
        roots.add(int(keeper.read_text()))
    runner.stop(signal.SIGKILL)
    for pid in _tree(roots):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _tree(roots):
        assert time.monotonic() < deadline, f"still alive: {_tree(roots)}"
        time.sleep(0.05)

    runner.start()

    def started_again(e: Environment) -> bool:  # the status still says running from before the crash
        r = runner.mode.run("exec", str(ctr["id"]), "cat", "/var/tmp/starts")
        return _running(e) and r.code == 0 and r.stdout == "started\nstarted\n"

    wait_for(server.admin, "mc", started_again, runner)
    [again] = runner.containers(env_id)
    assert again["id"] == ctr["id"] and again["state"] == "running"
    assert runner.exec(str(again["id"]), "cat /workspaces/mc/kept /data/kept /etc/kept") == "ws\nvol\nlayer\n"
    assert _host_state(home) == before  # no mount or network namespace left over from the dead container
    cg = again.get("cgroup")
    if isinstance(cg, str):
        procs = (Path("/sys/fs/cgroup/pids") / cg.strip("/") / "cgroup.procs")
        if procs.exists():
            assert procs.read_text().split(), "the restarted container's processes are in its cgroup"
