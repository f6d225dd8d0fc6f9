"""Nested Docker: `dockerd` in a `--docker` container, then `docker import` + `docker run`, root and rootless,
with the default network (as the runner runs it: dockerd and `docker pull` need one). Without --docker none
of the extras are there. On cgroup v1 the container cannot take the CVE-2022-0492 route out."""

from __future__ import annotations

import errno
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import IO_URING_SETUP, USER, Mode, image_for

pytestmark = [pytest.mark.userns, pytest.mark.slow]


@pytest.fixture
def docker_image(mode: Mode, images: dict[str, str], workdir: Path) -> str:
    """Debian with docker.io and iptables, the way `flex image bootstrap --include docker.io,iptables` makes it."""
    return image_for(images, workdir, mode, include=("docker.io", "iptables"))


@pytest.fixture
def tiny_rootfs_tar(mode: Mode, image_dir: str, workdir: Path) -> Path:
    """A few-file rootfs (echo + libc) for `docker import`, taken from the Debian image."""
    out = workdir / f"tiny-{mode.name}.tar"
    if not out.exists():
        root = Path(image_dir) / "rootfs"
        members = ["./bin", "./lib", "./lib64", "./usr/lib64", "./usr/bin/echo",
                   "./usr/lib/x86_64-linux-gnu/libc.so.6", "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]
        members = [m for m in members if (root / m).exists() or (root / m).is_symlink()]
        subprocess.run(["tar", "-C", str(root), "-cf", str(out), *members], check=True)
        if mode.rootless:
            subprocess.run(["chown", USER, str(out)], check=True)
    return out


def test_docker_run_inside(mode: Mode, docker_image: str, tiny_rootfs_tar: Path) -> None:
    mode.ok("run", "-d", "--name", "dind", "--docker", "-v", f"{tiny_rootfs_tar}:/tiny.tar:ro", docker_image,
            "sh", "-c", "dockerd > /var/log/dockerd.log 2>&1")
    deadline = time.monotonic() + 60
    while mode.run("exec", "dind", "docker", "version").code != 0:
        assert time.monotonic() < deadline, mode.run("exec", "dind", "cat", "/var/log/dockerd.log").stdout
        time.sleep(0.3)
    devs = mode.ok("exec", "dind", "cat", "/proc/net/dev")
    assert "eth0:" in devs and "docker0:" in devs, "its own network, where dockerd made its bridge"
    mode.ok("exec", "dind", "docker", "import", "/tiny.tar", "tiny")
    r = mode.run("exec", "dind", "docker", "run", "--rm", "tiny", "echo", "hi", timeout=180)
    assert r.code == 0, r.stderr + mode.run("exec", "dind", "tail", "-20", "/var/log/dockerd.log").stdout
    assert r.stdout == "hi\n"
    # the extras are for dockerd; io_uring stays off the allowlist with --docker too
    uring = mode.ok("exec", "dind", "perl", "-e", IO_URING_SETUP).split()
    assert uring[0] == "-1" and int(uring[1]) in (errno.EPERM, errno.ENOSYS), uring
    # CVE-2022-0492's steps: a user namespace of its own, a cgroup namespace, a v1 hierarchy, its release_agent
    controllers = next((line.split(":")[1] for line in Path("/proc/self/cgroup").read_text().splitlines()
                        if line.split(":")[1] and not line.split(":")[1].startswith("name=")), None)
    if controllers is not None:
        r = mode.run("exec", "dind", "unshare", "-UrmC", "--propagation", "private", "sh", "-c",
                     f"mkdir -p /tmp/cg && mount -t cgroup -o {controllers} cgroup /tmp/cg && echo mounted"
                     " && echo /tmp/x > /tmp/cg/release_agent && echo written")
        assert "written" not in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_docker_inside_a_keep_id_container(mode: Mode, docker_image: str, tiny_rootfs_tar: Path,
                                           workdir: Path, tmp_path: Path) -> None:
    """A local folder given to a non-root uid (keep-id) and Docker inside, together, as a runner starts a rootless
    environment with a non-root remoteUser and `--docker`: dockerd makes its cgroups under the container's own
    (its cgroup namespace is rooted there), an inner container runs in it, and the folder stays the user's.
    (uid 2000: its layer copies stay apart from test_keep_id's uid 1000 ones.)"""
    folder = workdir / f"keep-docker-{tmp_path.name}"
    folder.mkdir()
    subprocess.run(["chown", f"{USER}:{USER}", str(folder)], check=True)
    mode.ok("run", "-d", "--name", "kdind", "--docker", "--userns", "keep-id:uid=2000,gid=2000",
            "-v", f"{folder}:/w", "-v", f"{tiny_rootfs_tar}:/tiny.tar:ro", docker_image,
            "sh", "-c", "dockerd > /var/log/dockerd.log 2>&1")
    try:
        deadline = time.monotonic() + 60
        while mode.run("exec", "kdind", "docker", "version").code != 0:
            assert time.monotonic() < deadline, mode.run("exec", "kdind", "cat", "/var/log/dockerd.log").stdout
            time.sleep(0.3)
        assert mode.ok("exec", "kdind", "stat", "-c", "%u:%g", "/w").strip() == "2000:2000"
        mode.ok("exec", "kdind", "docker", "import", "/tiny.tar", "tiny")
        r = mode.run("exec", "kdind", "docker", "run", "--rm", "-v", "/w:/w", "tiny", "echo", "hi", timeout=180)
        assert r.code == 0, r.stderr + mode.run("exec", "kdind", "tail", "-20", "/var/log/dockerd.log").stdout
        assert r.stdout == "hi\n"
        mode.ok("exec", "kdind", "setpriv", "--reuid=2000", "--regid=2000", "--clear-groups", "touch", "/w/made")
        assert (folder / "made").stat().st_uid == mode.host_uid()
        info = json.loads(mode.ok("inspect", "kdind"))
        controllers = [line.split(":", 2) for line in Path(f"/proc/{info['pid']}/cgroup").read_text().splitlines()]
        v1 = [c for c in controllers if c[1] and not c[1].startswith("name=")]
        assert v1 and all(c[2] == info["cgroup"] for c in v1), controllers
        # dockerd's own groups sit below the container's cgroup, not at the hierarchy's root
        inner = mode.ok("exec", "kdind", "sh", "-c", "ls -d /sys/fs/cgroup/pids/docker")
        assert inner.strip() == "/sys/fs/cgroup/pids/docker"
        assert Path(f"/sys/fs/cgroup/pids{info['cgroup']}/docker").is_dir()
    finally:
        mode.run("rm", "-f", "kdind")


def test_without_docker_flag_no_extras(mode: Mode, docker_image: str) -> None:
    out = mode.ok("run", "--rm", docker_image, "sh", "-c",
                  "grep -c ' /sys/fs/cgroup ' /proc/self/mountinfo; test -e /dev/fuse && echo fuse;"
                  " test -e /dev/net/tun && echo tun; grep CapEff /proc/self/status;"
                  " touch /sys/x 2>/dev/null && echo rw; true")
    lines = out.split()
    assert lines[0] == "0"
    assert "fuse" not in lines and "tun" not in lines and "rw" not in lines
    cap_eff = int(lines[lines.index("CapEff:") + 1], 16)
    assert not cap_eff & (1 << 21), "no CAP_SYS_ADMIN without --docker"
    assert not cap_eff & (1 << 12), "no CAP_NET_ADMIN without --docker"
