"""Resource limits enforced by cgroups (v1 hybrid here, v2 elsewhere), root and rootless: asserted on the
kernel's own counters and on outcomes, never on timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import Mode, cgroup_dirs_of

pytestmark = pytest.mark.userns

V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()



def _cg(mode: Mode, ref: str) -> str:
    return str(json.loads(mode.ok("inspect", ref))["cgroup"])


def _read(rel: str, v1: tuple[str, str], v2: str) -> str:
    base = Path("/sys/fs/cgroup")
    path = base / rel.strip("/") / v2 if V2 else base / v1[0] / rel.strip("/") / v1[1]
    return path.read_text()


def _wait_exit(mode: Mode, ref: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = json.loads(mode.ok("inspect", ref))
        if info["state"] == "stopped":
            return info  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"{ref} did not stop")


def test_memory_hog_is_oom_killed(mode: Mode, image: str) -> None:
    # tail keeps a newline-free line in memory: it grows until the limit
    mode.ok("run", "-d", "--name", "hog", "--memory", "32m", image, "sh", "-c",
            "head -c 400m /dev/zero | tail > /dev/null; echo hog-status=$?")
    info = _wait_exit(mode, "hog")
    assert "hog-status=137" in mode.ok("logs", "hog"), "the hog was killed with SIGKILL"
    if V2:
        events = _read(info["cgroup"], ("", ""), "memory.events")
        assert int(events.split("oom_kill ")[1].split()[0]) >= 1
    else:
        oom = _read(info["cgroup"], ("memory", "memory.oom_control"), "")
        assert int(oom.split("oom_kill ")[1].split()[0]) >= 1
        assert int(_read(info["cgroup"], ("memory", "memory.max_usage_in_bytes"), "")) <= 32 << 20


def test_fork_bomb_stops_at_pids_limit(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "bomb", "--pids", "40", image, "sh", "-c",
            "b() { b | b & }; b; sleep 300")
    cg = _cg(mode, "bomb")
    deadline = time.monotonic() + 60
    hit = 0
    while time.monotonic() < deadline and not hit:
        events = _read(cg, ("pids", "pids.events"), "pids.events")
        hit = int(events.split("max ")[1].split()[0])
        time.sleep(0.2)
    assert hit >= 1, "fork attempts beyond the limit were refused"
    assert int(_read(cg, ("pids", "pids.current"), "pids.current")) <= 40
    assert _read(cg, ("pids", "pids.max"), "pids.max").strip() == "40"
    mode.ok("rm", "-f", "bomb")  # and the host is still fine enough to clean it up
    assert not cgroup_dirs_of(cg)


def test_default_pids_limit(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "plain", image, "sleep", "300")
    assert _read(_cg(mode, "plain"), ("pids", "pids.max"), "pids.max").strip() == "4096"


def test_cpu_quota_holds_and_updates_while_running(mode: Mode, image: str) -> None:
    mode.ok("run", "-d", "--name", "spin", "--cpus", "0.2", image, "sh", "-c", "while :; do :; done")
    cg = _cg(mode, "spin")
    if V2:
        assert _read(cg, ("", ""), "cpu.max").split() == ["20000", "100000"]
    else:
        assert _read(cg, ("cpu", "cpu.cfs_quota_us"), "").strip() == "20000"
    deadline = time.monotonic() + 60
    throttled = 0
    while time.monotonic() < deadline and throttled < 3:
        stat = _read(cg, ("cpu", "cpu.stat"), "cpu.stat")
        throttled = int(stat.split("nr_throttled ")[1].split()[0])
        time.sleep(0.2)
    assert throttled >= 3, "the busy loop was throttled by the quota"
    mode.ok("update", "spin", "--cpus", "1.5", "--memory", "128m", "--pids", "77")
    if V2:
        assert _read(cg, ("", ""), "cpu.max").split() == ["150000", "100000"]
    else:
        assert _read(cg, ("cpu", "cpu.cfs_quota_us"), "").strip() == "150000"
        assert int(_read(cg, ("memory", "memory.limit_in_bytes"), "")) == 128 << 20
    assert _read(cg, ("pids", "pids.max"), "pids.max").strip() == "77"


def test_bad_limits_are_usage_errors(mode: Mode, image: str) -> None:
    r = mode.run("run", "--rm", "--memory", "lots", image, "true")
    assert r.code == 7 and "--memory" in r.stderr and "Traceback" not in r.stderr
    r = mode.run("run", "--rm", "--cpus", "-1", image, "true")
    assert r.code == 7 and "--cpus" in r.stderr
