"""Escape attempts from inside containers, root and rootless: each one must fail, and the host must not
change. These are the classic ones (runc CVEs, docker escapes), tried for real."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import IO_URING_SETUP, USER, Mode

pytestmark = pytest.mark.userns



def test_proc_sys_and_sys_are_not_writable(mode: Mode, image: str) -> None:
    before = Path("/proc/sys/vm/overcommit_ratio").read_text()
    out = mode.ok("run", "--rm", image, "sh", "-c",
                  "echo 77 > /proc/sys/vm/overcommit_ratio 2>/dev/null && echo W1; echo 3 > /proc/sys/vm/drop_caches"
                  " 2>/dev/null && echo W2; touch /sys/x 2>/dev/null && echo W3;"
                  " echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo W4; wc -c < /proc/kallsyms; true")
    assert "W" not in out, out
    assert out.split()[-1] == "0", "/proc/kallsyms is masked"
    assert Path("/proc/sys/vm/overcommit_ratio").read_text() == before


def test_mknod_of_a_host_disk_fails(mode: Mode, image: str) -> None:
    disk = next((d for d in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda") if os.path.exists(d)), None)
    if disk is None:
        pytest.skip("no block device found to aim at")
    st = os.stat(disk)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    out = mode.ok("run", "--rm", image, "sh", "-c",
                  f"mknod /tmp/disk b {major} {minor} 2>/dev/null && echo MADE;"
                  f" head -c 512 /tmp/disk >/dev/null 2>&1 && echo READ; ls /dev; true")
    assert "READ" not in out
    assert "MADE" not in out or mode.rootless is False  # root: a node may be made but never opened
    assert Path(disk).name not in out.split()


def test_host_pid_1_is_invisible(mode: Mode, image: str) -> None:
    out = mode.ok("run", "--rm", "-e", "MARK=inside", image, "sh", "-c",
                  "tr '\\0' '\\n' < /proc/1/environ | grep -c MARK=inside; tr '\\0' ' ' < /proc/1/cmdline; echo;"
                  " ls -d /proc/[0-9]* | wc -l")
    count, cmdline, nprocs = out.strip().splitlines()
    assert count == "1", "/proc/1 is the container's own init"
    assert cmdline.startswith("/dev/init")
    assert int(nprocs) < 10


def test_runtime_binary_cannot_be_overwritten_via_proc_self_exe(mode: Mode, image: str) -> None:
    crun = shutil.which("crun")
    assert crun
    digest = hashlib.sha256(Path(crun).read_bytes()).hexdigest()
    # a process inside keeps trying to write through /proc/<pid>/exe of every process it sees, while
    # `exec` enters the container (CVE-2019-5736)
    mode.ok("run", "-d", "--name", "attacker", image, "sh", "-c",
            "while :; do for p in /proc/[0-9]*; do (printf x >> $p/exe) 2>/dev/null && echo WROTE $p; done; done")
    for _ in range(8):
        mode.ok("exec", "attacker", "true")
    assert hashlib.sha256(Path(crun).read_bytes()).hexdigest() == digest
    assert mode.ok("exec", "attacker", "echo", "still-fine").strip() == "still-fine"


def test_exec_leaks_no_fds_and_no_host_cwd(mode: Mode, image: str, workdir: Path) -> None:
    mode.ok("run", "-d", "--name", "box", image, "sleep", "300")
    leak = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        proc = subprocess.run(mode.argv("exec", "box", "sh", "-c", "pwd; ls -l /proc/self/fd/ | tail -n +2"),
                              env=mode.env(), capture_output=True, text=True, cwd=str(workdir), pass_fds=(leak,),
                              timeout=60)
    finally:
        os.close(leak)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "/"
    assert str(workdir) not in proc.stdout
    fds = [line.split()[-3] for line in lines[1:] if "->" in line]
    assert set(fds) <= {"0", "1", "2", "3"}, proc.stdout
    out = mode.ok("exec", "-w", "/../../../..", "box", "sh", "-c", f"pwd; test -e {workdir} && echo HOST; true")
    assert out.split() == ["/"]
    r = mode.run("exec", "-w", "relative/dir", "box", "pwd")
    assert r.code == 7


def _evil_image(mode: Mode, image: str, workdir: Path, proc_link: bool) -> Path:
    """A copy of the image whose /dev is a symlink climbing out of the root (and /proc one, if asked)."""
    evil = workdir / f"evil-{mode.name}-{int(proc_link)}"
    if evil.exists():
        return evil
    (evil / "rootfs").mkdir(parents=True)
    src = Path(image) / "rootfs"
    for entry in ("bin", "lib", "lib64", "sbin"):
        if (src / entry).is_symlink():
            (evil / "rootfs" / entry).symlink_to(os.readlink(src / entry))
    subprocess.run(["cp", "-a", str(src / "usr"), str(src / "etc"), str(evil / "rootfs")], check=True)
    for d in ("tmp", "sys", "root", "hostproc"):
        (evil / "rootfs" / d).mkdir()
    (evil / "rootfs" / "dev").symlink_to("../../../../../../../../../dev")
    if proc_link:
        (evil / "rootfs" / "proc").symlink_to("/hostproc")
    else:
        (evil / "rootfs" / "proc").mkdir()
    if mode.rootless:  # container root is the user: what we made here must be its own
        made = [evil, evil / "rootfs"] + [evil / "rootfs" / n for n in (
            "tmp", "sys", "root", "hostproc", "dev", "proc", "bin", "lib", "lib64", "sbin")]
        subprocess.run(["chown", "-h", f"{USER}:{USER}", *[str(p) for p in made if os.path.lexists(p)]], check=True)
    return evil


def test_symlinked_dev_in_the_image_does_not_help(mode: Mode, image_dir: str, workdir: Path) -> None:
    evil = _evil_image(mode, image_dir, workdir, proc_link=False)
    host_dev = sorted(os.listdir("/dev"))
    r = mode.run("run", "--rm", str(evil), "sh", "-c",
                 "ls /dev; wc -c < /proc/kallsyms; head -c 1 /dev/vda >/dev/null 2>&1 && echo READ; true")
    if r.code == 0:  # the runtime may also refuse such an image outright: equally fine
        assert "vda" not in r.stdout.split() and "READ" not in r.stdout
        assert "null" in r.stdout.split()
        assert r.stdout.split()[-1] == "0", "/proc/kallsyms is masked"
    assert sorted(os.listdir("/dev")) == host_dev, "nothing was mounted or created on the host's /dev"


def test_symlinked_proc_in_the_image_is_refused(mode: Mode, image_dir: str, workdir: Path) -> None:
    evil = _evil_image(mode, image_dir, workdir, proc_link=True)
    r = mode.run("run", "--rm", str(evil), "sh", "-c", "wc -c < /proc/kallsyms")
    assert r.code != 0 or r.stdout.strip() == "0"
    assert "Traceback" not in r.stderr


def test_bind_mount_source_symlink_escapes_are_refused(mode: Mode, image: str, workdir: Path) -> None:
    planted = workdir / f"planted-{mode.name}"
    planted.mkdir(exist_ok=True)
    link = planted / "data"
    if not link.is_symlink():
        link.symlink_to("/etc")
        os.lchown(link, 1001 if not mode.rootless else os.stat(mode.home).st_uid, 0)
    r = mode.run("run", "--rm", "-v", f"{link}:/data", image, "ls", "/data")
    assert r.code == 7, r.stdout + r.stderr
    assert "symlink" in r.stderr
    r = mode.run("run", "--rm", "-v", f"{link}/shadow:/x:ro", image, "true")
    assert r.code == 7
    real = planted / "real"
    real.mkdir(exist_ok=True)
    (real / "file").write_text("ok")
    out = mode.ok("run", "--rm", "-v", f"{real}:/data:ro", image, "sh", "-c",
                  "cat /data/file; touch /data/new 2>/dev/null && echo WROTE; true")
    assert out.split() == ["ok"]


def test_fork_bomb_does_not_take_the_host_down(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "bomb", "--pids", "200", image, "sh", "-c", "b() { b | b & }; b; sleep 300")
    time.sleep(2)
    # the host (and flex) still work while the bomb is at its limit
    assert mode.ok("run", "--rm", image, "echo", "alive").strip() == "alive"
    mode.ok("rm", "-f", "bomb")


def test_io_uring_and_unlisted_syscalls_are_refused(mode: Mode, image: str) -> None:
    host = subprocess.run(["perl", "-e", IO_URING_SETUP], capture_output=True, text=True, check=True).stdout.split()
    if host[0] == "-1":
        pytest.skip(f"io_uring is off on this host (errno {host[1]})")
    # the profile is an allowlist: io_uring is not on it, nor is any syscall number the kernel lacks (999)
    out = mode.ok("run", "--rm", image, "perl", "-e",
                  f"{IO_URING_SETUP}; $r = syscall(999); print $r, ' ', $! + 0, \"\\n\"; print $$ > 0, \"\\n\"")
    uring, unknown, alive = out.splitlines()
    assert uring.split()[0] == "-1" and int(uring.split()[1]) in (errno.EPERM, errno.ENOSYS), uring
    assert unknown == f"-1 {errno.ENOSYS}"
    assert alive == "1"


def test_new_namespaces_and_mounts_are_refused_without_docker(mode: Mode, image: str) -> None:
    out = mode.ok("run", "--rm", image, "sh", "-c",
                  "for ns in -U -m -n -p -i -u -C; do unshare $ns true 2>&1; done; mount -t tmpfs t /mnt 2>&1;"
                  " chroot / echo chroot-ok; (true) && echo fork-ok")
    assert out.count("unshare failed: Operation not permitted") == 7, out
    assert "permission denied" in out, out
    assert "chroot-ok" in out and "fork-ok" in out, out


def test_exec_user_lookup_stays_inside_the_container(mode: Mode, image: str, workdir: Path) -> None:
    # exec -u reads the container's /etc/passwd; a symlink there must resolve inside the container, never
    # to the host's file of that name
    host_only = workdir / f"passwd-{mode.name}"
    host_only.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    mode.ok("run", "-d", "--name", "links", image, "sleep", "300")
    mode.ok("exec", "links", "sh", "-c", f"ln -sf {host_only} /etc/passwd")
    r = mode.run("exec", "-u", "hostonly", "links", "id", "-u")
    assert r.code == 7 and "not found in the container's /etc/passwd" in r.stderr, r
    # a relative symlink that climbs out stops at the container's /
    mode.ok("exec", "links", "sh", "-c", "echo 'inside:x:4343:4343::/:/bin/sh' > /etc/passwd.real;"
            " ln -sf ../../../../../../etc/passwd.real /etc/passwd")
    assert mode.ok("exec", "-u", "inside", "links", "id", "-u").strip() == "4343"
