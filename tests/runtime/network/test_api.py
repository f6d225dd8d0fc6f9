"""The network module's interface without namespaces: -p parsing, modes, IPAM in the runtime database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flex.errors import Conflict, InvalidArgument, PermissionDenied, Unavailable, UsageError
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.network.ipam import IPAM, SCHEMA
from flex.runtime.network.networks import NetworkRequest, Networks, PortMapping, parse_publish


@pytest.mark.parametrize(("value", "expected"), [
    ("8080:80", PortMapping("127.0.0.1", 8080, 80, "tcp")),
    ("0:53/udp", PortMapping("127.0.0.1", 0, 53, "udp")),
    ("0.0.0.0:443:8443/tcp", PortMapping("0.0.0.0", 443, 8443, "tcp")),
    ("[::1]:9000:9000", PortMapping("::1", 9000, 9000, "tcp")),
    ("3000", PortMapping("127.0.0.1", 0, 3000, "tcp")),
])
def test_parse_publish_accepts_docker_forms(value: str, expected: PortMapping) -> None:
    assert parse_publish(value) == expected


@pytest.mark.parametrize(("value", "words"), [
    ("", "invalid --publish"), ("80:", "invalid --publish"), ("a:80", "invalid --publish"),
    ("8080:0", "ports are 1-65535"), ("70000:80", "ports are 1-65535"), ("80:80/sctp", "tcp or udp"),
    ("999.1.1.1:80:80", "not an IP address"),
])
def test_parse_publish_rejects_bad_values_with_one_clear_line(value: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_publish(value)
    assert words in err.value.message and "\n" not in err.value.message and err.value.hint


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.open(tmp_path / "flex")


def test_modes_refusals_and_etc_files(home: Home) -> None:
    db = MetadataDB(home.db_path)
    root = Networks(home, db, rootless=False)
    with pytest.raises(PermissionDenied) as err:
        root.prepare("c1", NetworkRequest("host", [], "c1"))
    assert "--allow-host-network" in (err.value.hint or "")
    with pytest.raises(UsageError):
        root.prepare("c1", NetworkRequest("none", [parse_publish("80")], "c1"))
    with pytest.raises(UsageError):
        root.prepare("c1", NetworkRequest("bridge", [], "c1"))
    with pytest.raises(InvalidArgument):
        root.prepare("c1", NetworkRequest("none", [], "a..b"))
    odd = root.prepare("odd", NetworkRequest("none", [], "my_app 2"))
    assert odd.etc_files["/etc/hostname"].read_text() == "my-app-2\n"
    root.release("odd")
    with pytest.raises(InvalidArgument):
        root.prepare("../x", NetworkRequest("none", [], "c1"))
    rootless = Networks(home, db, rootless=True)  # UDP is published rootless too (by the forwarder)
    assert rootless.prepare("u1", NetworkRequest("private", [parse_publish("0:53/udp")], "u1")).netns_path is None
    rootless.release("u1")

    host = root.prepare("h1", NetworkRequest("host", [], "h1", allow_host_network=True))
    assert host.host_network and host.netns_path is None
    none = root.prepare("n1", NetworkRequest("none", [], "quiet"))
    assert none.netns_path is None and not none.host_network
    assert none.etc_files["/etc/hostname"].read_text() == "quiet\n"
    assert "quiet" in none.etc_files["/etc/hosts"].read_text()
    assert none.etc_files["/etc/resolv.conf"].read_text() == ""
    with pytest.raises(Conflict):
        root.prepare("n1", NetworkRequest("none", [], "quiet"))
    assert root.attach("n1", os.getpid()).ports == []
    assert sorted(root.gc({"h1"})) == ["n1"]
    assert not none.etc_files["/etc/hosts"].exists()
    root.release("h1")
    assert root.gc(set()) == []


_LEASE = """
import sys
from pathlib import Path
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.network.ipam import IPAM, SCHEMA
db = MetadataDB(Path(sys.argv[1]))
db.ensure_schema("network", 1, SCHEMA)
ipam = IPAM(db, "10.99.0.0/27")
for i in range(12):
    print(ipam.lease(f"{sys.argv[2]}-{i}"))
"""


def test_ipam_never_hands_out_an_address_twice_across_processes_and_restarts(home: Home) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _LEASE, str(home.db_path), f"p{n}"], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
             for n in range(2)]
    got = [a for p in procs for a in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(got) == 24 and len(set(got)) == 24  # a /27 has 29 usable after network and gateway
    assert "10.99.0.1" not in got and "10.99.0.0" not in got and "10.99.0.31" not in got

    db = MetadataDB(home.db_path)  # a "restart": a new handle on the same file
    ipam = IPAM(db, "10.99.0.0/27")
    db.ensure_schema("network", 1, SCHEMA)
    held = ipam.leases()
    assert ipam.lease("p0-3") == held["p0-3"] and len(held) == 24  # same container, same lease
    freed = held["p0-3"]
    ipam.release("p0-3")
    fresh = [ipam.lease(f"new-{i}") for i in range(5)]
    # Distinct, never an address someone holds, and round-robin: the one just freed is not reused first.
    assert len(set(fresh)) == 5 and not set(fresh) & set(got) and freed not in fresh
    assert ipam.lease("last") == freed
    with pytest.raises(Unavailable, match="no free address"):
        ipam.lease("one-too-many")


def test_allow_entries_are_checked(home: Home) -> None:
    db = MetadataDB(home.db_path)
    nets = Networks(home, db, rootless=False, allow=["169.254.170.2", "host:3128", "host:53/udp"])
    assert nets.allow_cidrs == ["169.254.170.2/32"] and nets.allow_host_ports == ["3128/tcp", "53/udp"]
    for bad in ("host:99999", "host:80/sctp", "example.com", "10.0.0.0/33"):
        with pytest.raises(InvalidArgument, match="invalid network allow entry"):
            Networks(home, db, rootless=False, allow=[bad])
    with pytest.raises(InvalidArgument, match="need a root runner"):
        Networks(home, db, rootless=True, allow=["host:3128"])
