"""`flex runtime run --userns keep-id[:uid=U,gid=G]` (issue 14), as the user flextest would use it: a folder of
theirs bind-mounted is U's inside and what U makes there is theirs outside, while the image stays root's
(its layers copied once with owners for the map, beside each layer, reused, removed with the image)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import USER, Mode, cleanup, image_for

pytestmark = pytest.mark.userns


def _sub(path: str) -> int:
    return next(int(line.split(":")[1]) for line in Path(path).read_text().splitlines() if line.split(":")[0] == USER)


@pytest.fixture
def folder(workdir: Path, tmp_path: Path) -> Path:
    """A folder the user flextest owns, with a file of theirs."""
    d = workdir / f"keep-{tmp_path.name}"
    d.mkdir()
    (d / "mine.txt").write_text("mine\n")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(d)], check=True)
    return d


def _shifted(mode: Mode) -> list[Path]:
    return sorted(p for p in (mode.home / "snapshots").glob("*/shifted/*") if not p.name.startswith("."))


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_keep_id_gives_the_users_folder_to_uid_1000_and_keeps_the_image_roots(mode: Mode, image: str,
                                                                              folder: Path) -> None:
    me = pwd.getpwnam(USER)
    su, sg = _sub("/etc/subuid"), _sub("/etc/subgid")
    script = ("stat -c '%u:%g %n' /ws /ws/mine.txt / /etc/passwd /root /usr/bin/su /var/mail; "
              "setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo from-1000 > /ws/made.txt && "
              "echo more >> /ws/mine.txt && id -u'; "
              "echo root-was-here > /etc/flex-test && chown 1000:1000 /opt && stat -c '%u:%g' /opt; "
              "touch /ws/by-root; cat /proc/self/uid_map")
    out = mode.ok("run", "--rm", "--userns", "keep-id:uid=1000,gid=1000", "-v", f"{folder}:/ws", image,
                  "sh", "-c", script).splitlines()
    assert out[:7] == ["1000:1000 /ws", "1000:1000 /ws/mine.txt", "0:0 /", "0:0 /etc/passwd", "0:0 /root",
                       "0:0 /usr/bin/su", "0:8 /var/mail"], out
    assert out[7:9] == ["1000", "1000:1000"], out
    assert [line.split() for line in out[9:]] == [["0", "1", "1000"], ["1000", "0", "1"],
                                                  ["1001", "1001", "64536"]]
    for name in ("made.txt", "mine.txt"):  # uid 1000's files are the user's outside
        st = os.lstat(folder / name)
        assert (st.st_uid, st.st_gid) == (me.pw_uid, me.pw_gid), name
    assert (folder / "mine.txt").read_text() == "mine\nmore\n"
    assert os.lstat(folder / "by-root").st_uid == su  # the container's root is the first subuid

    # the layer copies: one per layer, made once; a second container reuses it (same directory, same inode)
    [copy] = [p for p in _shifted(mode) if p.name == "keep-id-1000-1000"]
    assert (copy.stat().st_uid, copy.stat().st_gid) == (su, sg)
    ino = copy.stat().st_ino
    cid = mode.ok("create", "--userns", "keep-id:uid=1000,gid=1000", "-v", f"{folder}:/ws", image, "true").strip()
    assert [p for p in _shifted(mode) if p.name == copy.name] == [copy] and copy.stat().st_ino == ino
    assert not list(copy.parent.glob(".tmp-*"))
    info = json.loads(mode.ok("inspect", cid))
    assert info["userns"] == "keep-id:uid=1000,gid=1000"
    assert info["uid_map"] == [[0, su, 1000], [1000, me.pw_uid, 1], [1001, su + 1000, 64536]]
    assert info["gid_map"] == [[0, sg, 1000], [1000, me.pw_gid, 1], [1001, sg + 1000, 64536]]
    lowers = json.loads((Path(info["bundle"]) / "image.json").read_text())["lowers"]
    assert lowers == [str(copy)]
    mode.ok("rm", cid)


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_plain_keep_id_is_the_users_own_ids_and_apt_works_as_root(mode: Mode, image: str, folder: Path) -> None:
    me = pwd.getpwnam(USER)
    out = mode.ok("run", "--rm", "--userns", "keep-id", "-v", f"{folder}:/ws", image, "sh", "-c",
                  "stat -c %u:%g /ws/mine.txt; stat -c %u:%g /etc/shadow; ls -ld /tmp | cut -c1-10; "
                  "apt-get --version >/dev/null && echo apt; id -u")
    assert out.split() == [f"{me.pw_uid}:{me.pw_gid}", "0:42", "drwxrwxrwt", "apt", "0"]
    assert f"keep-id-{me.pw_uid}-{me.pw_gid}" in [p.name for p in _shifted(mode)]  # (the session's home has more)
    # a started-again container mounts the copies again (the keeper, and so its mounts, may be gone)
    mode.ok("run", "-d", "--name", "again", "--userns", "keep-id", image, "sleep", "30")
    mode.ok("stop", "-t", "1", "again")
    subprocess.run(["kill", "-9", (mode.home / "run" / "userns.pid").read_text().strip()], check=True)
    mode.ok("start", "again")
    assert mode.ok("exec", "again", "stat", "-c", "%u:%g", "/etc/passwd").strip() == "0:0"
    mode.ok("rm", "-f", "again")


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_a_keep_id_container_is_in_its_cgroup(mode: Mode, image: str) -> None:
    """cgroup v1 lets only the task's own uid move it, and PID 1 is a subuid here: the runtime moves it. Its
    limits hold (a fork past --pids fails) and `rm -f` of a running one kills it (crun kill --all)."""
    out = mode.run("run", "--rm", "--pids", "20", "--userns", "keep-id", image, "sh", "-c",
                   "for i in $(seq 40); do sleep 5 & done; wait")
    assert "Cannot fork" in out.stdout + out.stderr, out
    cid = mode.ok("run", "-d", "--userns", "keep-id", image, "sleep", "600").strip()
    info = json.loads(mode.ok("inspect", cid))
    lines = Path(f"/proc/{info['pid']}/cgroup").read_text().splitlines()
    assert f"pids:{info['cgroup']}" in "\n".join(lines), lines
    mode.ok("rm", "-f", cid)
    assert not Path(f"/proc/{info['pid']}").exists() or "zombie" in Path(f"/proc/{info['pid']}/status").read_text()


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_bad_userns_values_are_one_line(mode: Mode, image: str, image_dir: str) -> None:
    for value, words in (("auto", "not a user namespace mode"), ("keep-id:uid=x", "is not uid=N"),
                         ("keep-id:uid=70000", "uid=70000: a rootless container's uids are 0..65536")):
        r = mode.run("run", "--rm", "--userns", value, image, "true")
        assert r.code == 7 and r.stderr.startswith("error: --userns") and words in r.stderr, r
        assert "Traceback" not in r.stderr and "hint: " in r.stderr
    r = mode.run("run", "--rm", "--userns", "keep-id", image_dir, "true")
    assert r.code == 7 and "is a root filesystem directory" in r.stderr and "Traceback" not in r.stderr, r


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_keep_id_as_root_is_refused(mode: Mode, image: str) -> None:
    r = mode.run("run", "--rm", "--userns", "keep-id", image, "true")
    assert r.code == 7 and "keep-id is for rootless containers" in r.stderr and "Traceback" not in r.stderr, r


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_the_copies_go_with_the_image(mode: Mode, images: dict[str, str], workdir: Path) -> None:
    """In a FLEX_HOME of its own (the session's image stays): `image rm` + `image prune` remove the copies too,
    although their files belong to subuids."""
    home = workdir / f"gc-home-{time.monotonic_ns()}"
    home.mkdir()
    subprocess.run(["chown", USER, str(home)], check=True)
    own = Mode(name="rootless", home=home, python=mode.python)
    try:
        img = image_for({}, workdir, own)
        own.ok("run", "--rm", "--userns", "keep-id:uid=1000,gid=1000", img, "true")
        assert [p.name for p in _shifted(own)] == ["keep-id-1000-1000"]
        r = subprocess.run(own.python_argv("-m", "flex", "image", "rm", img), env=own.env(), capture_output=True,
                           text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        r = subprocess.run(own.python_argv("-m", "flex", "image", "prune"), env=own.env(), capture_output=True,
                           text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        assert list((home / "snapshots").iterdir()) == []
    finally:
        cleanup(own)  # its containers, and the user namespace keeper it started
