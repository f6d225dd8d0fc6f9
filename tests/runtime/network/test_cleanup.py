"""kill -9 in the middle of network set-up, then GC: nothing is left behind and live containers keep theirs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.userns


def _workload_pids(cid: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"workload.py") for a in args) and cid.encode() in args:
                out.append(int(entry.name))
    return out


def test_kill_9_during_setup_then_gc_leaves_nothing_and_spares_live_containers(lab) -> None:
    keep = lab.up("keeper", "0:8000", "0:9000/udp")
    keep_port, keep_udp = (p["host_port"] for p in keep["ports"])

    # How long a whole `up` takes here, so the kills below land at different points inside it.
    start = time.monotonic()
    lab.up("timing", "0:8000", "0:9000/udp")
    full = time.monotonic() - start
    lab.release("timing")

    victims = []
    for i, fraction in enumerate((0.15, 0.3, 0.45, 0.6, 0.75, 0.9)):
        cid = f"victim-{i}"
        proc = subprocess.Popen(lab.agent_argv("up", cid, "1" if lab.rootless else "0", "0:8000", "0:9000/udp"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(full * fraction)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        victims.append(cid)
        lab.pids.update(_workload_pids(cid))

    released = lab.gc("keeper")
    assert "keeper" not in released
    assert set(released) <= set(victims)
    # The survivor still works: its namespace, rules and forwarder were left alone.
    r = lab.from_host("tcp", "127.0.0.1", str(keep_port))
    assert r["ok"] and r["reply"].startswith("hello keeper "), r
    r = lab.from_host("udp", "127.0.0.1", str(keep_udp))
    assert r["ok"] and r["reply"] == "echo keeper ping", r
    assert lab.from_container(keep, "tcp", "10.250.0.2", "80")["ok"]
    left = lab.leftovers()
    assert [e[0] for e in left["endpoints"]] == ["keeper"]
    # Root: the forwarder; rootless: slirp4netns, the UDP forwarder and its namespaced helper.
    assert len(left["processes"]) <= (3 if lab.rootless else 1), left["processes"]
    assert all("keeper" in p for p in left["processes"]), left["processes"]

    assert lab.gc() == ["keeper"]
    assert not lab.from_host("tcp", "127.0.0.1", str(keep_port))["ok"]
    assert not lab.from_host("udp", "127.0.0.1", str(keep_udp))["ok"]
    assert lab.leftovers() == {"netns files": [], "container dirs": [], "links": [], "nft tables": [],
                               "processes": [], "leases": [], "endpoints": []}


def test_release_right_after_attach_stops_the_helper_every_time(lab) -> None:
    # Regression: a helper spawned a moment ago is still in execve (empty /proc/PID/cmdline); release
    # must not mistake it for someone else's process and leave it running with the port bound.
    assert lab.agent("churn", "1" if lab.rootless else "0", "12") == {"churned": 12}
    lab.gc()  # the bridge and its rules stay for the next container until gc finds them idle
    assert lab.leftovers() == {"netns files": [], "container dirs": [], "links": [], "nft tables": [],
                               "processes": [], "leases": [], "endpoints": []}


def test_a_failed_rootless_attach_leaves_no_helper_running(lab) -> None:
    if not lab.rootless:
        pytest.skip("root attach does not join the process's namespaces")
    # The agent's own pid: its namespaces are the runner's, so slirp4netns and the UDP forwarder's helper
    # cannot set up there. attach must fail with a flex error and stop the forwarder it had started.
    assert lab.agent("badattach", "bad", "1")["error"] in ("Unavailable", "FailedPrecondition")
    assert lab.leftovers()["processes"] == []
    lab.release("bad")
    assert lab.leftovers() == {"netns files": [], "container dirs": [], "links": [], "nft tables": [],
                               "processes": [], "leases": [], "endpoints": []}
