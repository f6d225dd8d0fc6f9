"""flex's own supervisor, through `flex service ...` as an operator runs it: a real detached supervising process,
real kill -9, real pid files and logs in temporary FLEX_ETC/FLEX_RUN/FLEX_LOG."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.service.supervisor import backoff


class Svc:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "FLEX_ETC": str(root / "etc"), "FLEX_RUN": str(root / "run"),
                    "FLEX_LOG": str(root / "log")}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "flex", "service", *args], env=self.env, capture_output=True,
                           text=True, timeout=60)
        assert not check or r.returncode == 0, r.stderr
        return r

    def status(self, name: str) -> dict[str, object]:
        return json.loads(self("status", name, "--json", check=False).stdout)  # type: ignore[no-any-return]

    def wait_main(self, name: str, not_pid: object = None, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status(name)
            if s["state"] == "running" and s["main"] != not_pid:
                return int(s["main"])  # type: ignore[call-overload]
            time.sleep(0.1)
        raise AssertionError(f"{name} never ran again: {self.status(name)}\n{self.log(name)}")

    def log(self, name: str) -> str:
        p = self.root / "log" / f"{name}.log"
        return p.read_text() if p.exists() else ""


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Svc]:
    s = Svc(tmp_path)
    yield s
    for name in ("echo", "pair"):
        if (tmp_path / "etc" / "services" / f"{name}.json").exists():
            s("stop", name, check=False)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_backoff_doubles_up_to_thirty_seconds() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 5, 6, 7, 20)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_service_killed_with_9_is_started_again_and_logs_say_so(svc: Svc) -> None:
    svc("add", "echo", "--env", "GREETING=hello", "--", "sh", "-c", 'echo "$GREETING"; exec sleep 600')
    svc("start", "echo")
    first = svc.wait_main("echo")
    os.kill(first, signal.SIGKILL)
    second = svc.wait_main("echo", not_pid=first)
    assert second != first and not _alive(first)
    s = svc.status("echo")
    assert s["restarts"] == 1 and s["lastExit"] == -9
    log = svc.log("echo")
    assert log.count("hello") == 2 and "(killed by SIGKILL); restarting in 1 s" in log
    out = svc("logs", "echo", "-n", "2").stdout  # the restart's two lines, in either order
    assert f"started echo (pid {second})" in out and "hello" in out
    svc("stop", "echo")
    assert not _alive(second)
    assert svc.status("echo")["state"] == "stopped"
    assert not list((svc.root / "run").iterdir()), "pid and state files are removed on stop"


def test_stop_signals_the_main_process_only_so_its_sessions_outlive_it(svc: Svc, tmp_path: Path) -> None:
    # like a runner: its environments run in sessions of their own and must survive a restart of the runner
    marker = tmp_path / "child.pid"
    svc("add", "pair", "--", "sh", "-c", f"setsid sleep 600 & echo $! > {marker}; exec sleep 600")
    svc("start", "pair")
    svc.wait_main("pair")
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    try:
        svc("restart", "pair")
        assert _alive(child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_supervisor_killed_with_9_leaves_no_second_copy_after_start(svc: Svc) -> None:
    svc("add", "echo", "--", "sleep", "600")
    svc("start", "echo")
    main = svc.wait_main("echo")
    sup = int((svc.root / "run" / "echo.pid").read_text())
    os.kill(sup, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(sup):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert svc.status("echo")["state"] == "stopped"
    svc("start", "echo")
    fresh = svc.wait_main("echo")
    assert fresh != main and not _alive(main), "the orphaned command was stopped before a new one started"


def test_bad_names_and_unknown_services_are_one_line(svc: Svc) -> None:
    r = svc("start", "nope", check=False)
    assert r.returncode == 3 and r.stderr.startswith("error: no service 'nope'")
    r = svc("add", "Bad/Name", "--", "true", check=False)
    assert r.returncode == 2 and "is not a service name" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_service_with_a_user_runs_as_that_user_in_a_clean_environment(svc: Svc) -> None:
    # how the installer runs the control plane (user flex) and a person's daemon (--desktop --linger)
    import pwd

    pw = pwd.getpwnam("flextest")
    svc("add", "who", "--user", "flextest", "--env", "GREETING=hi", "--", "sh", "-c",
        'echo "who: $(id -u) $(id -g) $HOME $USER $GREETING ${XDG_RUNTIME_DIR:-unset}"; exec sleep 600')
    env = dict(svc.env, XDG_RUNTIME_DIR="/run/user/0")  # what a root login has: it must not leak
    r = subprocess.run([sys.executable, "-m", "flex", "service", "start", "who"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    main = svc.wait_main("who")
    try:
        assert os.stat(f"/proc/{main}").st_uid == pw.pw_uid
        deadline = time.monotonic() + 10
        while "who: " not in svc.log("who"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        line = svc.log("who").split("who: ", 1)[1].splitlines()[0]
        assert line.split() == [str(pw.pw_uid), str(pw.pw_gid), pw.pw_dir, "flextest", "hi", "unset"]
    finally:
        svc("stop", "who")
    r = svc("add", "who", "--user", "no-such-user-here", "--", "true", check=False)
    assert r.returncode != 0 and "no such user" in r.stderr and "Traceback" not in r.stderr
