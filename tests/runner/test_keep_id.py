"""Issue 14 on a rootless desktop runner (the laptop case: `flex up` by a normal user): a local folder with a
non-root remoteUser (a `vscode`-like uid 1000) is that user's inside and its files the folder owner's outside,
through `--userns keep-id`; the image stays root's, its shifted layers are made once and reused, and a
remoteUser of root goes back to the default map (a new container). Real server, runner, builds, containers."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from flex.api import Environment
from tests.conftest import run_flex
from tests.runner.conftest import Runner, Server, cond, crashed, image_for, wait_for, wait_gone

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]

# dockerd in its own session, so the hook's exec ending does not end it
_DOCKERD = "setsid dockerd > /var/log/dockerd.log 2>&1 < /dev/null &"


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready") and \
        env.status.observed_generation == env.metadata.generation


def _copies(runner: Runner) -> dict[Path, int]:
    return {p: p.stat().st_ino for p in (runner.mode.home / "snapshots").glob("*/shifted/keep-id-1000-1000")}


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_a_local_folder_is_remote_users_inside_and_the_owners_outside(server: Server, runner: Runner,
                                                                      image: str) -> None:
    me = pwd.getpwnam("flextest")
    folder = Path(tempfile.mkdtemp(prefix="project-", dir="/var/tmp"))  # where the desktop user can reach it
    (folder / ".devcontainer").mkdir()
    (folder / ".devcontainer" / "Dockerfile").write_text(f"FROM {image}\nRUN useradd -m -u 1000 -U vscode\n")
    config = folder / ".devcontainer" / "devcontainer.json"
    config.write_text(json.dumps({"build": {"dockerfile": "Dockerfile"}, "remoteUser": "vscode"}))
    (folder / "notes.txt").write_text("mine\n")
    for p in (folder, *folder.rglob("*")):
        shutil.chown(p, "flextest", "flextest")
    runner.join(server, "--kind", "desktop")
    runner.start()
    server.admin.create_environment("local", {"source": {"path": str(folder)}})
    env = wait_for(server.admin, "local", _running, runner, timeout=300)
    assert cond(env, "SourceReady") == ("True", "LocalFolder")
    assert "owned by vscode, uid 1000, inside" in (env.status.condition("SourceReady").message or "")
    [ctr] = runner.containers(env.metadata.id)
    assert ctr["userns"] == "keep-id:uid=1000,gid=1000"
    ws = "/workspaces/local"
    out = runner.exec(ctr["id"], f"stat -c %u:%g {ws} {ws}/notes.txt /etc/passwd /; "
                      f"setpriv --reuid 1000 --regid 1000 --init-groups sh -c 'echo by-vscode > {ws}/made.txt "
                      f"&& echo more >> {ws}/notes.txt'; chown vscode /opt && touch /etc/by-root && "
                      "apt-get check >/dev/null && echo root-can")
    assert out.split() == ["1000:1000", "1000:1000", "0:0", "0:0", "root-can"], out
    for name in ("made.txt", "notes.txt"):
        st = (folder / name).stat()
        assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid), name
    assert (folder / "notes.txt").read_text() == "mine\nmore\n"
    copies = _copies(runner)
    assert len(copies) == 2  # the base layer and the built one, each copied once

    # a new container with the same map (an env change recreates it) reuses the copies as they are
    server.admin.patch_environment("local", {"spec": {"env": {"WHICH": "second"}}})
    env = wait_for(server.admin, "local", lambda e: _running(e) and runner.containers(e.metadata.id)[0]["id"] !=
                   ctr["id"], runner)
    [again] = runner.containers(env.metadata.id)
    assert runner.exec(again["id"], f"echo $WHICH; stat -c %u {ws}/made.txt") == "second\n1000\n"
    assert _copies(runner) == copies

    # remoteUser root: the map is part of what the container is made of; root inside owns the folder again
    config.write_text(json.dumps({"build": {"dockerfile": "Dockerfile"}, "remoteUser": "root"}))
    server.admin.patch_environment("local", {"spec": {"ports": [{"port": 8080}]}})
    env = wait_for(server.admin, "local", lambda e: _running(e) and runner.containers(e.metadata.id)[0]["id"] !=
                   again["id"], runner)
    [plain] = runner.containers(env.metadata.id)
    assert plain["userns"] == "" and runner.exec(plain["id"], f"stat -c %u:%g {ws}/notes.txt") == "0:0\n"
    server.admin.delete_environment("local")
    wait_gone(server.admin, "local", runner)
    assert (folder / "notes.txt").read_text() == "mine\nmore\n"  # the user's folder is never removed
    shutil.rmtree(folder)
    assert os.path.exists(runner.mode.home)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_nested_docker_and_the_folder_owned_by_remote_user(server: Server, runner: Runner,
                                                          images: dict[str, str], workdir: Path) -> None:
    """`spec.docker` with a non-root remoteUser on a local folder: the folder is vscode's inside (keep-id)
    and dockerd inside runs containers, with /var/lib/docker on its volume."""
    docker_image = image_for(images, workdir, runner.mode, include=("docker.io", "iptables"))
    folder = _project(docker_image, "RUN useradd -m -u 1000 -U vscode", {"remoteUser": "vscode"})
    runner.join(server, "--kind", "desktop")
    runner.start()
    server.admin.create_environment("dind", {"source": {"path": str(folder)}, "docker": True})
    env = wait_for(server.admin, "dind", _running, runner, timeout=300)
    assert cond(env, "SourceReady") == ("True", "LocalFolder")
    [ctr] = runner.containers(env.metadata.id)
    assert ctr["userns"] == "keep-id:uid=1000,gid=1000"
    ws = "/workspaces/dind"
    runner.exec(ctr["id"], f"su vscode -c 'touch {ws}/by-vscode'")
    assert (folder / "by-vscode").stat().st_uid == pwd.getpwnam("flextest").pw_uid
    runner.exec(ctr["id"], _DOCKERD)  # as root (hooks run as remoteUser; the docker-in-docker feature's way)
    deadline = time.monotonic() + 90
    while runner.mode.run("exec", ctr["id"], "docker", "version").code != 0:
        assert time.monotonic() < deadline, runner.exec(ctr["id"], "tail -20 /var/log/dockerd.log")
        time.sleep(0.3)
    out = runner.exec(ctr["id"], "cd / && tar -ch usr/bin/echo lib64 usr/lib/x86_64-linux-gnu/libc.so.6 "
                      "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 2>/dev/null | docker import - tiny >/dev/null"
                      " && docker run --rm tiny /usr/bin/echo inside && stat -c %u /var/lib/docker")
    assert out == "inside\n0\n"
    server.admin.delete_environment("dind")
    wait_gone(server.admin, "dind", runner)
    shutil.rmtree(folder)


def _project(image: str, run: str, config: dict[str, object]) -> Path:
    """A local folder of flextest's with a Dockerfile (``run`` its RUN line) and a devcontainer.json."""
    folder = Path(tempfile.mkdtemp(prefix="project-", dir="/var/tmp"))
    (folder / ".devcontainer").mkdir()
    (folder / ".devcontainer" / "Dockerfile").write_text(f"FROM {image}\n{run}\n")
    (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"build": {"dockerfile": "Dockerfile"},
                                                                            **config}))
    for p in (folder, *folder.rglob("*")):
        shutil.chown(p, "flextest", "flextest")
    return folder


def _first_environment(server: Server, runner: Runner, tmp_path: Path, folder: Path, name: str
                       ) -> tuple[tuple[str, ...], Environment, dict[str, Any]]:
    """The runner joined and started, ``name`` made from ``folder`` and running as vscode's keep-id map: the
    CLI's admin options, the environment, its container."""
    token = (tmp_path / "server-home" / "server" / "admin-token").read_text().strip()
    runner.join(server, "--kind", "desktop")
    runner.start()
    server.admin.create_environment(name, {"source": {"path": str(folder)}})
    env = wait_for(server.admin, name, _running, runner, timeout=300)
    [ctr] = runner.containers(env.metadata.id)
    assert ctr["userns"] == "keep-id:uid=1000,gid=1000"
    return ("--server", server.url, "--token", token), env, ctr


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_a_keep_id_environment_round_trips_through_a_backup(server: Server, runner: Runner, image: str,
                                                            tmp_path: Path) -> None:
    """The writable layer of a keep-id container, backed up and restored as a new environment on the same folder:
    root's and vscode's files come back as theirs."""
    folder = _project(image, "RUN useradd -m -u 1000 -U vscode", {"remoteUser": "vscode"})
    admin, _, ctr = _first_environment(server, runner, tmp_path, folder, "kb")
    runner.exec(ctr["id"], "echo layer > /opt/layer.txt && setpriv --reuid 1000 --regid 1000 --init-groups sh -c "
                           "'echo mine > /home/vscode/mine.txt'")
    r = run_flex("backup", "create", "kb", *admin)
    assert r.code == 0, (r, runner.text()[-3000:])
    [made] = json.loads(run_flex("backup", "ls", "kb", "--json", *admin).stdout)
    try:
        r = run_flex("restore", made["id"], "--as", "kb2", *admin, timeout=150)
    except Exception:
        raise AssertionError((server.admin.get_environment("kb2").status, runner.text()[-3000:])) from None
    assert r.code == 0 and "kb2 is ready" in r.stdout, (r, runner.text()[-3000:])
    copy = wait_for(server.admin, "kb2", _running, runner)
    assert cond(copy, "Restored") == ("True", "Restored")
    [cc] = runner.containers(copy.metadata.id)
    assert cc["userns"] == "keep-id:uid=1000,gid=1000"
    assert runner.exec(cc["id"], "cat /opt/layer.txt /home/vscode/mine.txt; stat -c %u:%g /opt/layer.txt "
                                 "/home/vscode/mine.txt /etc/passwd") == "layer\nmine\n0:0\n1000:1000\n0:0\n"
    for name in ("kb", "kb2"):
        server.admin.delete_environment(name)
        wait_gone(server.admin, name, runner)
    shutil.rmtree(folder)


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_files_keep_their_owners_inside_when_the_map_changes_and_through_a_backup(server: Server, runner: Runner,
                                                                                  image: str, tmp_path: Path) -> None:
    """The map follows remoteUser's uid, so the same ids outside mean other users inside after a change: a volume's
    files are moved into the new map when the container is made again, and a backup stores the ids seen inside,
    so a restore into another map has vscode's files still vscode's and root's still root's."""
    volume = {"mounts": ["source=data,target=/data,type=volume"]}
    folder = _project(image, "RUN useradd -m -u 1000 -U vscode && useradd -m -u 1001 -U other",
                      {"remoteUser": "vscode", **volume})
    config = folder / ".devcontainer" / "devcontainer.json"

    def use(user: str) -> None:
        config.write_text(json.dumps({"build": {"dockerfile": "Dockerfile"}, "remoteUser": user, **volume}))
        shutil.chown(config, "flextest", "flextest")

    admin, env, ctr = _first_environment(server, runner, tmp_path, folder, "km")
    runner.exec(ctr["id"], "echo layer > /opt/layer.txt && echo r > /data/r.txt && echo v > /data/v.txt && "
                           "chown 1000:1000 /data/v.txt && setpriv --reuid 1000 --regid 1000 --init-groups sh -c "
                           "'echo mine > /home/vscode/mine.txt'")
    owners = "stat -c %n=%u:%g /data /data/r.txt /data/v.txt"
    want = "/data=0:0\n/data/r.txt=0:0\n/data/v.txt=1000:1000\n"
    assert runner.exec(ctr["id"], owners) == want
    r = run_flex("backup", "create", "km", *admin)
    assert r.code == 0, (r, runner.text()[-3000:])
    [made] = json.loads(run_flex("backup", "ls", "km", "--json", *admin).stdout)

    def change_to(user: str, uid: int, cut_after: tuple[str, ...]) -> dict[str, object]:
        """remoteUser of another uid: a new container in another map, the volume's files moved into it; the
        runner killed -9 right after each step in ``cut_after`` of that move, and started again, finishes it."""
        use(user)
        before = runner.containers(env.metadata.id)[0]["id"]
        runner.stop()
        for i, step in enumerate(cut_after):
            runner.start(crash_after=step)
            if i == 0:
                server.admin.patch_environment("km", {"spec": {"env": {"WHO": user}}})
            crashed(runner, step)
        runner.start()
        wait_for(server.admin, "km", lambda e: _running(e) and runner.containers(e.metadata.id)[0]["id"] != before,
                 runner)
        [now] = runner.containers(env.metadata.id)
        assert now["userns"] == f"keep-id:uid={uid},gid={uid}"
        assert runner.exec(now["id"], owners) == want
        return now

    change_to("other", 1001, ("volume-shift-copied", "volume-shift-noted"))

    # the backup (made under uid 1000's map) restored into uid 1001's: owners as they were inside
    r = run_flex("restore", made["id"], "--as", "km2", *admin, timeout=150)
    assert r.code == 0 and "km2 is ready" in r.stdout, (r, runner.text()[-3000:])
    copy = wait_for(server.admin, "km2", _running, runner)
    [cc] = runner.containers(copy.metadata.id)
    assert cc["userns"] == "keep-id:uid=1001,gid=1001"
    assert runner.exec(cc["id"], f"{owners} /opt/layer.txt /home/vscode/mine.txt; cat /data/v.txt /opt/layer.txt") \
        == want + "/opt/layer.txt=0:0\n/home/vscode/mine.txt=1000:1000\nv\nlayer\n"
    server.admin.delete_environment("km2")
    wait_gone(server.admin, "km2", runner)

    change_to("vscode", 1000, ("volume-shift-swapped",))  # and back, cut at the last step
    server.admin.delete_environment("km")
    wait_gone(server.admin, "km", runner)
    shutil.rmtree(folder)
