"""Spec changes end to end (a real `flex server`, real `flex runner run`, root and rootless): resources live,
a changed env or source ref recreates the container on the same volume with its hooks run again, stop and
start keep apt-installed packages, delete leaves nothing of the environment on the machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from flex.api import Environment
from tests.runner.conftest import _GIT_ENV, GitServer, Runner, Server, cond, devcontainer, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

# a package made and installed with dpkg/apt inside the container, no network needed
_APT_INSTALL = ("mkdir -p /tmp/p/DEBIAN /tmp/p/usr/bin && printf '#!/bin/sh\\necho hello from a package\\n' "
                "> /tmp/p/usr/bin/flex-hello && chmod 755 /tmp/p/usr/bin/flex-hello && printf 'Package: flex-hello"
                "\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.invalid>\\nDescription: test\\n' "
                "> /tmp/p/DEBIAN/control && dpkg-deb -b /tmp/p /tmp/flex-hello.deb >/dev/null && "
                "apt-get install -y -q /tmp/flex-hello.deb >/dev/null 2>&1 && rm -rf /tmp/p /tmp/flex-hello.deb")


def _settled(env: Environment) -> bool:
    return env.status.phase in ("running", "failed") and cond(env, "Ready") is not None and \
        env.status.observed_generation == env.metadata.generation and \
        (env.status.phase == "failed" or cond(env, "Ready") == ("True", "Ready"))


def _running(env: Environment) -> bool:
    return _settled(env) and env.status.phase == "running" and cond(env, "LifecycleReady") == ("True", "HooksDone")


def _add_branch(git: GitServer, repo: str, branch: str, files: dict[str, str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="branch-", dir=git.base.parent))
    env = {**os.environ, **_GIT_ENV}
    try:
        subprocess.run(["git", "clone", "-q", str(git.base / f"{repo}.git"), str(work)], env=env, check=True)
        subprocess.run(["git", "checkout", "-q", "-b", branch], cwd=work, env=env, check=True)
        for rel, text in files.items():
            (work / rel).write_text(text)
        subprocess.run(["git", "add", "-A"], cwd=work, env=env, check=True)
        subprocess.run(["git", "commit", "-q", "-m", branch], cwd=work, env=env, check=True)
        subprocess.run(["git", "push", "-q", "origin", branch], cwd=work, env=env, check=True)
    finally:
        shutil.rmtree(work)


def _cgroup_file(ctr: dict[str, object], controller: str, name: str) -> str | None:
    cg = ctr.get("cgroup")
    if not isinstance(cg, str):
        return None
    p = Path("/sys/fs/cgroup") / controller / cg.strip("/") / name
    return p.read_text().strip() if p.exists() else None


def test_changes_resize_live_recreate_on_env_and_ref_and_stop_keeps_packages(
        server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    url = git_server.repo("chg", devcontainer(image, onCreateCommand="echo made >> /var/tmp/made"))
    runner.join(server)
    runner.start()
    server.admin.create_environment("chg", {"source": {"git": url}, "resources": {"cpus": 0.5, "memory": "512Mi"}})
    env = wait_for(server.admin, "chg", _running, runner)
    env_id = env.metadata.id
    [ctr] = runner.containers(env_id)
    cid = ctr["id"]
    runner.exec(cid, "echo mine > /workspaces/chg/notes.txt; echo layer > /etc/in-the-layer; " + _APT_INSTALL)
    assert runner.exec(cid, "flex-hello") == "hello from a package\n"
    limited = ctr.get("cgroup") is not None
    if limited:  # a weight, not a quota: it may use idle CPU
        assert _cgroup_file(ctr, "cpu", "cpu.shares") == "512"
        assert _cgroup_file(ctr, "cpu", "cpu.cfs_quota_us") == "-1"

    # stop and start: the same container, the package still installed
    server.admin.stop_environment("chg")
    wait_for(server.admin, "chg", lambda e: e.status.phase == "stopped" and
             e.status.observed_generation == e.metadata.generation, runner)
    server.admin.start_environment("chg")
    wait_for(server.admin, "chg", _running, runner)
    [ctr] = runner.containers(env_id)
    assert ctr["id"] == cid
    assert runner.exec(cid, "flex-hello; dpkg -s flex-hello | grep ^Status") == \
        "hello from a package\nStatus: install ok installed\n"

    # resources: applied to the running container, no restart
    started = ctr["started_at"]
    server.admin.patch_environment("chg", {"spec": {"resources": {"cpus": 1.5, "memory": "768Mi"}}})
    wait_for(server.admin, "chg", _running, runner)
    [ctr] = runner.containers(env_id)
    assert (ctr["id"], ctr["started_at"]) == (cid, started)
    if limited:
        assert _cgroup_file(ctr, "cpu", "cpu.shares") == "1536"
        assert _cgroup_file(ctr, "memory", "memory.limit_in_bytes") == str(768 * 2**20)

    # disk: a small limit; writing under it is fine, beyond it is reported, and a start over it is refused
    server.admin.patch_environment("chg", {"spec": {"resources": {"disk": "64Mi"}}})
    runner.exec(cid, "head -c 16M /dev/urandom > /workspaces/chg/under.bin && sync")
    wait_for(server.admin, "chg", lambda e: _running(e) and cond(e, "DiskPressure") == ("False", "UnderDiskLimit"),
             runner)
    runner.exec(cid, "head -c 40M /dev/urandom > /var/tmp/layer.bin && head -c 20M /dev/urandom > "
                "/workspaces/chg/over.bin && sync")
    env = wait_for(server.admin, "chg", lambda e: cond(e, "DiskPressure") == ("True", "OverDiskLimit"), runner)
    pressure = env.status.condition("DiskPressure")
    assert pressure is not None and "64.0 MiB" in pressure.message and "spec.resources.disk" in pressure.message
    assert env.status.phase == "running"  # still usable: its user may delete files
    server.admin.stop_environment("chg")
    wait_for(server.admin, "chg", lambda e: e.status.phase == "stopped" and
             e.status.observed_generation == e.metadata.generation, runner)
    server.admin.start_environment("chg")
    env = wait_for(server.admin, "chg", lambda e: e.status.phase == "failed" and
                   e.status.observed_generation == e.metadata.generation, runner)
    assert cond(env, "ContainerReady") == ("False", "DiskLimitExceeded")
    assert [c["state"] for c in runner.containers(env_id)] == ["stopped"]
    server.admin.patch_environment("chg", {"spec": {"resources": {"disk": "10Gi"}}})
    wait_for(server.admin, "chg", lambda e: _running(e) and cond(e, "DiskPressure") == ("False", "UnderDiskLimit"),
             runner)
    runner.exec(cid, "rm /workspaces/chg/under.bin /workspaces/chg/over.bin /var/tmp/layer.bin")

    # env: a new container on the same volume; onCreateCommand runs for it; the old layer is gone
    server.admin.patch_environment("chg", {"spec": {"env": {"ADDED": "yes"}}})
    env = wait_for(server.admin, "chg", lambda e: _running(e) and runner.containers(env_id)[0]["id"] != cid,
                   runner)
    [ctr] = runner.containers(env_id)
    new = ctr["id"]
    assert runner.exec(new, "echo $ADDED; cat /workspaces/chg/notes.txt /var/tmp/made; test -e /etc/in-the-layer "
                       "|| echo no-layer") == "yes\nmine\nmade\nno-layer\n"
    if limited:  # resources carry over to the new container
        assert _cgroup_file(ctr, "cpu", "cpu.shares") == "1536"

    # source ref: fetched into the same clone (the user's untracked file stays), container recreated
    _add_branch(git_server, "chg", "next", {"NEXT.md": "on the next branch\n"})
    server.admin.patch_environment("chg", {"spec": {"source": {"git": url, "ref": "next"}}})
    env = wait_for(server.admin, "chg", lambda e: _running(e) and runner.containers(env_id)[0]["id"] != new,
                   runner)
    [ctr] = runner.containers(env_id)
    assert runner.exec(ctr["id"], "cd /workspaces/chg && cat NEXT.md notes.txt && git -c safe.directory='*' "
                       "rev-parse --abbrev-ref HEAD 2>/dev/null || true").startswith("on the next branch\nmine\n")
    c = env.status.condition("SourceReady")
    assert c is not None and "at next" in c.message
    # owners inside stay who they were across the recreate (a root runner shifts the id range)
    assert runner.exec(ctr["id"], "stat -c %u /workspaces/chg/notes.txt /workspaces/chg/NEXT.md") == "0\n0\n"

    # delete: container, volume, state, cgroup and the container's files all go
    bundle = runner.mode.home / "containers" / ctr["id"]
    assert bundle.exists()
    server.admin.delete_environment("chg")
    wait_gone(server.admin, "chg", runner)
    assert runner.containers(env_id) == []
    assert not bundle.exists()
    assert not (runner.mode.home / "runner" / "volumes" / env_id).exists()
    assert not (runner.mode.home / "runner" / "state" / env_id).exists()
    if limited:
        assert not (Path("/sys/fs/cgroup/cpu") / str(ctr["cgroup"]).strip("/")).exists()


def test_an_edited_devcontainer_in_a_local_folder_recreates_when_the_generation_changes(
        server: Server, runner: Runner, image: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="project-", dir="/var/tmp"))  # where the desktop user can reach it
    (folder / ".devcontainer").mkdir(parents=True)
    config = folder / ".devcontainer" / "devcontainer.json"
    config.write_text(json.dumps({"image": image, "containerEnv": {"WHICH": "first"},
                                  "initializeCommand": "id -un > initialized-on-host"}))
    for p in (folder, folder / ".devcontainer", config):
        shutil.chown(p, "flextest", "flextest")
    runner.join(server, "--kind", "desktop")  # a root desktop runner too (a laptop's runner run by root)
    runner.start()
    server.admin.create_environment("local", {"source": {"path": str(folder)}})
    env = wait_for(server.admin, "local", _running, runner)
    assert cond(env, "SourceReady") == ("True", "LocalFolder")
    [ctr] = runner.containers(env.metadata.id)
    assert runner.exec(ctr["id"], "echo $WHICH") == "first\n"
    # the folder's owner outside is the container's user (root here) inside, and what it makes is theirs
    assert runner.exec(ctr["id"], "stat -c %u:%g /workspaces/local/.devcontainer/devcontainer.json; "
                       "echo inside > /workspaces/local/made-inside") == "0:0\n"
    made_inside = folder / "made-inside"
    assert made_inside.read_text() == "inside\n"
    assert (made_inside.stat().st_uid, made_inside.stat().st_gid) == (folder.stat().st_uid, folder.stat().st_gid)
    mnt = runner.mode.home / "runner" / "mnt" / env.metadata.id
    assert str(mnt) not in Path("/proc/self/mountinfo").read_text()  # nothing of it stays on the host
    # initializeCommand ran on the host, in the folder, as its user (a desktop runner's)
    made = folder / "initialized-on-host"
    assert made.read_text() == "flextest\n" and made.stat().st_uid == folder.stat().st_uid

    config.write_text(json.dumps({"image": image, "containerEnv": {"WHICH": "second"}}))
    # no spec change yet: the runner's resyncs leave the container alone
    runner.wait_reconciled(env.metadata.id, after=os.path.getmtime(config) + 6)
    assert [c["id"] for c in runner.containers(env.metadata.id)] == [ctr["id"]]
    # what `flex up` does when the folder's devcontainer files change: a new generation
    server.admin.patch_environment("local", {"spec": {"ports": [{"port": 8080}]}})
    wait_for(server.admin, "local", lambda e: _running(e) and runner.containers(e.metadata.id)[0]["id"] !=
             ctr["id"], runner)
    [again] = runner.containers(env.metadata.id)
    assert runner.exec(again["id"], "echo $WHICH") == "second\n"
    server.admin.delete_environment("local")
    wait_gone(server.admin, "local", runner)
    assert folder.is_dir() and config.exists()  # a local folder is the user's: delete never touches it
    shutil.rmtree(folder)
