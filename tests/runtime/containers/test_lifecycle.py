"""Containers as a user meets them, as root and rootless: ids, ownership, exit codes, signals, exec, logs,
the image's config, removal and GC. Real crun, real user namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import Mode, cgroup_dirs_of

pytestmark = pytest.mark.userns



def _inspect(mode: Mode, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(mode.ok("inspect", ref))  # type: ignore[no-any-return]


def test_uid_map_id_and_file_owners(mode: Mode, image: str) -> None:
    out = mode.ok("run", "--name", "ids", image, "sh", "-c",
                  "cat /proc/self/uid_map; echo --; id -u; id -g; echo --; stat -c '%u:%g' /etc/passwd /var/log/btmp;"
                  " echo data > /created; stat -c '%u:%g' /created; touch /by1; chown 1:1 /by1")
    maps, ids, owners = (part.split() for part in out.split("--"))
    info = _inspect(mode, "ids")
    upper_file = Path(info["bundle"]) / "upper" / "created"
    if mode.rootless:
        # A user namespace of its own inside the keeper's, one to one (so its root holds no capability in
        # the keeper's namespace); seen from the host, container root = the user (the owner check below).
        assert maps == ["0", "0", "1", "1", "1", "65536"]
    else:
        assert maps[0] == "0" and maps[2] == "65536"
        base = int(maps[1])
        assert base >= 1 << 30, "root runner ranges are above every /etc/subuid range"
        assert all(not (s <= base < s + n) for s, n in _all_subids())
    assert ids == ["0", "0"]
    # image files owned by root and by group utmp (43) inside, whatever the host ids are
    assert owners[:2] == ["0:0", "0:43"]
    assert owners[2] == "0:0"
    host_owner = upper_file.stat().st_uid
    assert host_owner == (mode.host_uid() if mode.rootless else int(maps[1]))
    if mode.rootless:
        assert (upper_file.parent / "by1").stat().st_uid == _subuid_start()  # 1..65536 = the subuid range


def test_two_root_containers_get_distinct_id_ranges(mode: Mode, image: str) -> None:
    if mode.rootless:
        pytest.skip("rootless containers all map to the user's own range")
    a = mode.ok("run", "--rm", image, "sh", "-c", "cat /proc/self/uid_map")
    mode.ok("run", "-d", "--name", "holder", image, "sleep", "60")
    b = mode.ok("exec", "holder", "cat", "/proc/self/uid_map")
    c = mode.ok("run", "--rm", image, "sh", "-c", "cat /proc/self/uid_map")
    assert b.split()[1] != c.split()[1], "two live containers never share host ids"
    assert a.split()[1] == b.split()[1], "a range released by rm is handed out again"


def test_two_flex_homes_never_share_an_id_range(mode: Mode, image_dir: str, workdir: Path) -> None:
    if mode.rootless:
        pytest.skip("rootless containers all map to the user's own range")
    mode.ok("run", "-d", "--name", "first", image_dir, "sleep", "300")
    mine = mode.ok("exec", "first", "cat", "/proc/self/uid_map").split()[1]
    other = Mode(name="root", home=workdir / "other-home", python=mode.python)
    try:
        theirs = other.ok("run", "--rm", image_dir, "cat", "/proc/self/uid_map").split()[1]
    finally:
        other.run("gc")
        shutil.rmtree(other.home, ignore_errors=True)
    assert mine != theirs, "each FLEX_HOME has its own DB, the claim on the range is machine-wide"


def test_exit_codes_and_signals_pass_through(mode: Mode, image: str) -> None:
    assert mode.run("run", "--rm", image, "sh", "-c", "exit 3").code == 3
    assert mode.run("run", "--rm", image, "sh", "-c", "kill -KILL $$").code == 137
    r = mode.run("run", "--rm", image, "/no/such/binary")
    assert r.code != 0
    assert mode.ok("ps", "-a", "-q") == ""


def test_image_config_env_cmd_workdir_user(mode: Mode, image_dir: str, workdir: Path) -> None:
    img = workdir / f"cfg-{mode.name}"
    if not img.exists():
        img.mkdir()
        (img / "rootfs").symlink_to(Path(image_dir) / "rootfs")
        cfg = {"config": {"Env": ["PATH=/usr/bin:/bin", "GREETING=from-image"], "Entrypoint": ["sh", "-c"],
                          "Cmd": ["echo $GREETING $(pwd) $(id -un) $EXTRA"], "WorkingDir": "/var", "User": "nobody"}}
        (img / "config.json").write_text(json.dumps(cfg))
    assert mode.ok("run", "--rm", "-e", "EXTRA=x", str(img)).split() == ["from-image", "/var", "nobody", "x"]
    out = mode.ok("run", "--rm", "-u", "root", "-w", "/tmp", str(img), "echo $(pwd) $(id -u)")
    assert out.split() == ["/tmp", "0"]


def test_detached_logs_stop_forwards_sigterm(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "svc", image, "sh", "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done")
    _wait_for_log(mode, "svc", "ready")
    assert "running" in mode.ok("ps")
    mode.ok("stop", "svc")
    info = _inspect(mode, "svc")
    assert info["state"] == "stopped" and info["exit_code"] == 7
    logged = mode.ok("logs", "svc").split()
    assert logged[0] == "ready" and logged[-1] == "got-term"  # (sleep, also signalled, may say Terminated)
    mode.ok("rm", "svc")
    assert mode.run("inspect", "svc").code == 3


def test_stop_kills_after_timeout_and_rm_refuses_running(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "stubborn", image, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
    _wait_for_log(mode, "stubborn", "ready")
    r = mode.run("rm", "stubborn")
    assert r.code == 4 and "running" in r.stderr
    mode.ok("stop", "-t", "1", "stubborn")
    assert _inspect(mode, "stubborn")["exit_code"] == 137


def test_init_reaps_zombies(mode: Mode, image: str) -> None:
    # orphans re-parented to PID 1 must be reaped: count zombies after they exit
    out = mode.ok("run", "--rm", image, "sh", "-c",
                  "for i in 1 2 3 4 5; do sh -c 'sleep 0.2 & exit 0'; done; sleep 1.5;"
                  " cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -l ') Z' /proc/[0-9]*/stat | wc -l")
    cmdline, zombies = out.strip().splitlines()
    assert cmdline.startswith("/dev/init")
    assert zombies.strip() == "0"


def test_exec_without_tty(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "box", image, "sleep", "300")
    assert mode.run("exec", "box", "sh", "-c", "exit 5").code == 5
    assert mode.ok("exec", "-e", "A=b", "-w", "/etc", "box", "sh", "-c", "echo $A $(pwd)").split() == ["b", "/etc"]
    assert mode.ok("exec", "-u", "nobody", "box", "id", "-u").strip() == "65534"
    # the runner's form is parsed without typer (flex/cli/runtime.py's fast_main); typer's forms say the same,
    # and what the lean parse does not know, typer refuses
    assert mode.ok("exec", "--env=A=b", "--workdir=/etc", "box", "sh", "-c", "echo $A $(pwd)").split() == ["b", "/etc"]
    assert mode.run("exec", "--no-such-flag", "box", "true").code == 2
    # a user added in the running container (a lifecycle hook, say) is found: its own files count, as with Docker
    mode.ok("exec", "box", "sh", "-c", "echo 'hooked:x:1234:1234::/tmp:/bin/sh' >> /etc/passwd;"
            " echo 'hookers:x:4321:hooked' >> /etc/group")
    assert mode.ok("exec", "-u", "hooked", "box", "id").split() == ["uid=1234(hooked)", "gid=1234",
                                                                    "groups=1234,4321(hookers)"]
    r = mode.run("exec", "-u", "ghost", "box", "true")
    assert r.code == 7 and "not found in the container's /etc/passwd" in r.stderr, r
    r = mode.run("exec", "-i", "box", "cat", input="streamed-stdin\n")
    assert r.stdout == "streamed-stdin\n"
    assert mode.run("exec", "nosuch", "true").code == 3
    # a command the container does not have: 127 and one line, as Docker (not crun's 255 and its own text)
    r = mode.run("exec", "box", "nosuch-command")
    assert (r.code, r.stderr.splitlines()[0]) == (127, "error: 'nosuch-command' not found in container box"), r
    assert "$PATH" not in r.stderr and "Traceback" not in r.stderr
    assert mode.run("exec", "-w", "/usr", "box", "./bin/true").code == 0
    r = mode.run("exec", "box", "/etc/passwd")
    assert r.code == 126 and "not executable" in r.stderr, r
    assert mode.run("exec", "box", "sh", "-c", "exit 255").code == 255
    # a process file its caller left (killed mid-exec: it may hold secrets) goes at the next exec, a fresh one stays
    (cid,) = [c["id"] for c in json.loads(mode.ok("ps", "--json")) if c["name"] == "box"]
    bundle = mode.home / "containers" / cid
    stale, fresh = bundle / "exec-0123456789ab.json", bundle / "exec-ba9876543210.json"
    for f in (stale, fresh):
        f.write_text("{}")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert mode.run("exec", "box", "true").code == 0
    assert not stale.exists() and fresh.exists()
    fresh.unlink()


def _pty_run(argv: list[str], env: dict[str, str], rows: int, cols: int, resize: tuple[int, int] | None,
             timeout: float = 60) -> str:
    pid, master = pty.fork()
    if pid == 0:  # child: our terminal is the pty, sized before exec (the parent's ioctl could come too late)
        fcntl_winsize(0, rows, cols)
        os.chdir("/")
        os.execvpe(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + timeout
    resized = False
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
        if resize and not resized and b"READY" in out:
            fcntl_winsize(master, *resize)
            resized = True
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out.decode(errors="replace")


def fcntl_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_exec_and_run_with_tty_and_resize(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "term", image, "sleep", "300")
    out = _pty_run(mode.argv("exec", "-t", "term", "sh", "-c", "tty; stty size; echo READY; sleep 1.5; stty size"),
                   mode.env(), 31, 97, resize=(42, 120))
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "31 97"
    assert lines[-1] == "42 120"
    out = _pty_run(mode.argv("run", "--rm", "-t", image, "sh", "-c", "test -t 0 && test -t 1 && stty size"),
                   mode.env(), 25, 80, resize=None)
    assert "25 80" in out


def test_tty_gets_the_callers_term_or_xterm(mode: Mode, image: str) -> None:
    show = ["sh", "-c", "echo T=$TERM."]
    env = {**mode.env(), "TERM": "screen-256color"}
    assert "T=screen-256color." in _pty_run(mode.argv("run", "--rm", "-t", image, *show), env, 25, 80, None)
    assert "T=vt100." in _pty_run(mode.argv("run", "--rm", "-t", "-e", "TERM=vt100", image, *show), env, 25, 80,
                                  None)
    no_term = {k: v for k, v in env.items() if k != "TERM"}
    assert "T=xterm." in _pty_run(mode.argv("run", "--rm", "-t", image, *show), no_term, 25, 80, None)
    mode.ok("run", "-d", "--name", "plain", image, "sleep", "300")
    assert mode.ok("exec", "plain", *show).strip() == "T=.", "no terminal, no TERM"
    assert "T=tmux." in _pty_run(mode.argv("exec", "-t", "plain", *show), {**env, "TERM": "tmux"}, 25, 80, None)
    assert "T=xterm." in _pty_run(mode.argv("exec", "-t", "plain", *show), no_term, 25, 80, None)


def test_only_a_rm_containers_writable_layer_is_volatile(mode: Mode, image: str) -> None:
    """--rm (as podman mounts it): no syncs of the disk for a layer that goes with the run, not even at its
    unmount; a container that outlives its run keeps them."""
    show = ["sh", "-c", "grep '^overlay / ' /proc/self/mounts"]
    assert "volatile" in mode.ok("run", "--rm", image, *show)
    kept = mode.ok("run", "--name", "kept", image, *show)
    assert kept.startswith("overlay / ") and "volatile" not in kept
    mode.ok("rm", "kept")


def test_rm_and_gc_leave_nothing(mode: Mode, image: str) -> None:
    cid = mode.ok("run", "-d", "--memory", "64m", image, "sleep", "300").strip()
    info = _inspect(mode, cid)
    bundle = Path(info["bundle"])
    assert cgroup_dirs_of(info["cgroup"]) and bundle.exists()
    mode.ok("rm", "-f", cid)
    assert not bundle.exists()
    assert not cgroup_dirs_of(info["cgroup"])
    assert str(bundle) not in Path("/proc/self/mountinfo").read_text()
    # nothing left to collect (rootless: only the user's namespace keeper, now idle, goes)
    assert [x for x in mode.ok("gc").split() if x != "userns-keeper"] == []


def test_gc_after_kill_9_mid_create(mode: Mode, image: str) -> None:
    """kill -9 the CLI at different points of creation; GC (plus rm of what did start) leaves nothing."""
    for delay in (0.02, 0.05, 0.08, 0.12, 0.2, 0.4):
        proc = subprocess.Popen(mode.argv("run", "-d", "--memory", "64m", image, "sleep", "300"), env=mode.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        time.sleep(delay)
        _kill_tree(proc.pid)
        proc.wait()
    mode.run("gc")
    for cid in mode.ok("ps", "-a", "-q").split():
        mode.ok("rm", "-f", cid)
    mode.ok("gc")
    assert mode.ok("ps", "-a", "-q") == ""
    assert not [p for p in (mode.home / "containers").iterdir()]
    assert str(mode.home) not in Path("/proc/self/mountinfo").read_text()
    state = mode.home / "run" / "oci"
    assert not state.exists() or not [p for p in state.iterdir() if p.is_dir()]


def _kill_tree(pid: int) -> None:
    """SIGKILL the CLI (and, rootless, the python under runuser), as a crash would."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for k in [*map(int, kids), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGKILL)


def _wait_for_log(mode: Mode, ref: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in mode.run("logs", ref).stdout:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the logs of {ref}")


def _subuid_start() -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _ = line.split(":")
        if name == "flextest":
            return int(start)
    raise AssertionError("flextest has no subuid range")


def _all_subids() -> list[tuple[int, int]]:
    out = []
    for f in ("/etc/subuid", "/etc/subgid"):
        for line in Path(f).read_text().splitlines():
            parts = line.split(":")
            if len(parts) == 3:
                out.append((int(parts[1]), int(parts[2])))
    return out


def test_create_start_kill_wait(mode: Mode, image: str) -> None:
    cid = mode.ok("create", "--name", "later", image, "sh", "-c", "echo up; sleep 300").strip()
    assert _inspect(mode, "later")["state"] == "created" and cid.startswith(_inspect(mode, "later")["id"][:12])
    mode.ok("start", "later")
    _wait_for_log(mode, "later", "up")
    assert mode.run("start", "later").code == 4, "already running"
    mode.ok("kill", "-s", "TERM", "later")  # tini forwards it; sh dies of it
    assert mode.ok("wait", "later").strip() == "143"
    assert mode.run("kill", "later").code == 4, "not running any more"


def test_usage_errors_are_one_line_with_exit_codes(mode: Mode, image: str) -> None:
    r = mode.run("run", "--rm", "/no/such/image", "true")
    assert r.code == 3 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = mode.run("run", "--rm", "--no-such-flag", image, "true")
    assert r.code == 2 and "--no-such-flag" in r.stderr
    r = mode.run("run", "--rm", "-u", "nosuchuser", image, "true")
    assert r.code == 7 and "nosuchuser" in r.stderr
    r = mode.run("run", "--rm", "-v", "relative:/x:zz", image, "true")
    assert r.code == 7
    mode.ok("run", "-d", "--name", "dup", image, "sleep", "300")
    r = mode.run("run", "--rm", "--name", "dup", image, "true")
    assert r.code == 4 and "dup" in r.stderr
    assert "Usage" in mode.ok("run", "--help") or "usage" in mode.ok("run", "--help")
    assert mode.ok("ps", "-a", "-q").split() == [_inspect(mode, "dup")["id"][:12]], "failed runs left nothing"


def test_runc_fallback_runs_containers(mode: Mode, image: str) -> None:
    if mode.rootless or not shutil.which("runc"):
        pytest.skip("runc fallback checked as root, with runc installed")
    proc = subprocess.run(mode.argv("run", "--rm", image, "sh", "-c", "cat /proc/self/uid_map; exit 4"),
                          env={**mode.env(), "FLEX_OCI_RUNTIME": "runc"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert int(proc.stdout.split()[1]) >= 1 << 30


def test_logs_follow_streams_until_the_container_stops(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "talker", image, "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.5; done")
    r = mode.run("logs", "-f", "talker", timeout=60)
    assert r.code == 0 and r.stdout.split() == ["line1", "line2", "line3"]
    assert _inspect(mode, "talker")["state"] == "stopped"


def test_killing_the_monitor_orphans_nothing(mode: Mode, image: str) -> None:
    """The process waiting for a detached container dies (kill -9, a crashed runner): the container is
    still listed, still stoppable, and `rm` still cleans everything."""
    mode.ok("run", "-d", "--name", "lonely", image, "sh", "-c", "echo up; sleep 300")
    _wait_for_log(mode, "lonely", "up")
    pid = _inspect(mode, "lonely")["pid"]
    monitor = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert Path(f"/proc/{monitor}/comm").read_text().strip().startswith("python")
    os.kill(monitor, signal.SIGKILL)
    time.sleep(0.3)
    assert _inspect(mode, "lonely")["state"] == "running"
    mode.ok("stop", "-t", "2", "lonely")
    assert _inspect(mode, "lonely")["state"] == "stopped"
    info = _inspect(mode, "lonely")
    mode.ok("rm", "lonely")
    assert not Path(info["bundle"]).exists()


def test_image_prune_keeps_the_layers_of_a_container(mode: Mode, image_dir: str, workdir: Path) -> None:
    """`flex image rm` + `prune` while a container runs on the image: its layers stay until it is gone."""
    tiny = workdir / f"tiny-prune-{mode.name}.tar"
    root = Path(image_dir) / "rootfs"
    members = ["./bin", "./lib", "./lib64", "./usr/lib64", "./usr/bin/echo", "./usr/bin/sleep", "./usr/bin/dash",
               "./usr/lib/x86_64-linux-gnu/libc.so.6", "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]
    subprocess.run(["tar", "-C", str(root), "-cf", str(tiny), *[m for m in members if os.path.lexists(root / m)]],
                   check=True)
    tiny.chmod(0o644)
    code = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
            "from flex.runtime.images.store import ImageStore; from flex.runtime.unpack.userns import store_ownership; "
            "from flex.runtime.transfer.bootstrap import image_from_rootfs_tar; "
            "print(image_from_rootfs_tar(ImageStore(Home.open(), ownership=store_ownership()), Path(sys.argv[1]), "
            "'flextest/tiny:1').name)")
    made = subprocess.run(mode.python_argv("-c", code, str(tiny)), env=mode.env(), capture_output=True, text=True,
                          cwd="/", timeout=300)
    assert made.returncode == 0, made.stderr
    image = made.stdout.strip()

    def image_cli(*args: str) -> str:
        proc = subprocess.run(mode.python_argv("-m", "flex", "image", *args), env=mode.env(), capture_output=True,
                              text=True, cwd="/", timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    mode.ok("run", "-d", "--name", "tenant", image, "sleep", "300")
    lowers = [Path(p) for p in json.loads((Path(_inspect(mode, "tenant")["bundle"]) / "image.json")
                                          .read_text())["lowers"]]
    image_cli("rm", image)
    image_cli("prune")
    assert all(p.is_dir() for p in lowers), "prune kept the layers the container runs on"
    assert mode.ok("exec", "tenant", "echo", "still-here").strip() == "still-here"
    mode.ok("rm", "-f", "tenant")
    image_cli("prune")
    assert not any(p.exists() for p in lowers), "once the container is gone, prune frees them"
