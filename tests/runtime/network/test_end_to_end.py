"""End to end: two real containers started by `flex runtime run -d -p ...`, the isolation matrix, `rm`.

Root runner only: the whole CLI runs inside the lab's host namespace (conftest.py), so the bridge, rules
and published ports are the lab's, never the machine's. The containers run a Perl TCP server (Debian
minbase ships perl-base). Skipped until the containers code (`flex runtime run`) is in the tree.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import debian_rootfs_tar

pytestmark = [pytest.mark.userns, pytest.mark.slow]

SERVER = ('$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>8000,Listen=>5,ReuseAddr=>1) or die "bind $!";'
          'while($c=$s->accept){print $c "hello NAME from ".$c->peerhost; close $c}')


@pytest.fixture(scope="module")
def rootfs_image() -> Any:
    if importlib.util.find_spec("flex.runtime.containers") is None or shutil.which("crun") is None:
        pytest.skip("`flex runtime run` (flex/runtime/containers.py) or crun is not available")
    tar = debian_rootfs_tar()
    d = Path(tempfile.mkdtemp(prefix="flexnet-img-"))
    (d / "rootfs").mkdir()
    subprocess.run(["tar", "-C", str(d / "rootfs"), "--exclude=./dev/*", "-xf", str(tar)], check=True)
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)


def test_flex_runtime_run_publishes_and_isolates_two_containers(lab, rootfs_image: str) -> None:
    if lab.rootless:
        pytest.skip("end to end runs as root; the rootless network path is covered by test_isolation.py")

    def flex(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(lab.in_host("env", f"FLEX_HOME={lab.home}", sys.executable, "-m", "flex", "runtime",
                                          *args), capture_output=True, text=True, timeout=180)

    names = ("web-a", "web-b")
    try:
        ports: dict[str, int] = {}
        netns: dict[str, dict[str, Any]] = {}
        for name in names:
            r = flex("run", "-d", "--name", name, "-p", "0:8000", rootfs_image, "perl", "-MIO::Socket::INET", "-e",
                     SERVER.replace("NAME", name))
            assert r.returncode == 0, r.stderr
            r = flex("port", name)
            assert r.returncode == 0, r.stderr
            m = re.search(r"8000/tcp -> 127\.0\.0\.1:(\d+)", r.stdout)
            assert m, r.stdout
            ports[name] = int(m.group(1))
        # Each container's network namespace, found by the hostname file flex wrote for it.
        for hostname_file in (lab.home / "run" / "net").glob("*/hostname"):
            name = hostname_file.read_text().strip()
            cid = hostname_file.parent.name
            hosts = (hostname_file.parent / "hosts").read_text()
            address = re.search(rf"^(\S+)\t{name}$", hosts, re.M)
            assert address, hosts
            netns[name] = {"netns": str(lab.home / "run" / "netns" / cid), "address": address.group(1),
                           "pid": None}
        assert set(netns) == set(names)
        a, b = netns["web-a"], netns["web-b"]
        gateway = a["address"].rsplit(".", 1)[0] + ".1"

        for name in names:  # published on the host's loopback; the forwarder connects from the bridge
            r = lab.from_host("tcp", "127.0.0.1", str(ports[name]))
            assert r["ok"] and r["reply"] == f"hello {name} from {gateway}", r
        for src in (a, b):
            r = lab.from_container(src, "tcp", "10.250.0.2", "80")
            assert r["ok"] and r["reply"] == "hello world from 10.250.0.1", r
        for src, dst in ((a, b), (b, a)):
            assert not lab.from_container(src, "tcp", dst["address"], "8000")["ok"]
            assert not lab.from_container(src, "icmp", dst["address"])["ok"]
        for probe in (("tcp", gateway, "7002"), ("tcp", "10.250.0.1", "7002"), ("tcp", gateway, "7001"),
                      ("tcp", "169.254.169.254", "80"), ("icmp", gateway)):
            assert not lab.from_container(a, *probe)["ok"], probe

        for name in names:
            r = flex("rm", "-f", name)
            assert r.returncode == 0, r.stderr
            assert not lab.from_host("tcp", "127.0.0.1", str(ports[name]))["ok"]
        left = lab.leftovers()
        assert left == {"netns files": [], "container dirs": [], "links": [], "nft tables": [], "processes": [],
                        "leases": [], "endpoints": []}, left
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                flex("rm", "-f", name)
