"""Two containers on one runner, as root and rootless: what each can and cannot reach, and cleanup.

The isolation matrix of issue 6, run inside the lab namespaces of conftest.py (never the real network).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.userns


def _ok(result: dict[str, object]) -> bool:
    return bool(result["ok"])


def test_two_containers_reach_the_world_and_publish_ports_but_not_each_other_or_the_host(lab) -> None:
    publish = ["0:8000", "127.0.0.1:0:9000/udp"]
    a = lab.up("ctr-a", *publish)
    b = lab.up("ctr-b", *publish)
    port = {name: {p["protocol"]: p["host_port"] for p in info["ports"]} for name, info in (("a", a), ("b", b))}
    assert all(p["host_ip"] == "127.0.0.1" and p["host_port"] > 0 for info in (a, b) for p in info["ports"])

    # Published ports answer on the host's loopback, each with its own container behind it.
    for name in ("a", "b"):
        r = lab.from_host("tcp", "127.0.0.1", str(port[name]["tcp"]))
        assert _ok(r) and r["reply"].startswith(f"hello ctr-{name} "), r
        r = lab.from_host("udp", "127.0.0.1", str(port[name]["udp"]))
        assert _ok(r) and r["reply"] == f"echo ctr-{name} ping", r

    # Outbound works, and leaves through the runner's address (NAT), not the container's.
    for info in (a, b):
        r = lab.from_container(info, "tcp", "10.250.0.2", "80")
        assert _ok(r) and r["reply"] == "hello world from 10.250.0.1", r

    # Not each other.
    if lab.rootless:
        # The only way to b is its published port on the host's loopback, which slirp4netns hides.
        r = lab.from_container(a, "tcp", "10.0.2.2", str(port["b"]["tcp"]))
        assert not _ok(r), r
        r = lab.from_container(a, "udp", "10.0.2.2", str(port["b"]["udp"]))
        assert not _ok(r), r
    else:
        for src, dst in ((a, b), (b, a)):
            assert not _ok(lab.from_container(src, "tcp", dst["address"], "8000"))
            assert not _ok(lab.from_container(src, "icmp", dst["address"]))
        # ICMP itself works (so the failures above are the filter's doing): the world answers pings.
        assert _ok(lab.from_container(a, "icmp", "10.250.0.2"))

    # Not the runner: neither its loopback services nor its own addresses.
    gateway = "10.0.2.2" if lab.rootless else a["address"].rsplit(".", 1)[0] + ".1"  # the bridge
    probes = [("tcp", gateway, "7001"), ("tcp", gateway, "7002"), ("tcp", "10.250.0.1", "7002")]
    for info in (a, b):
        for probe in probes:
            r = lab.from_container(info, *probe)
            assert not _ok(r), (probe, r)
    assert _ok(lab.from_host("tcp", "10.250.0.1", "7002"))  # the servers are there
    if not lab.rootless:
        assert not _ok(lab.from_container(a, "icmp", gateway))

    # Not link-local metadata (a server the lab runs on 169.254.169.254 that the runner itself can reach).
    assert _ok(lab.from_host("tcp", "169.254.169.254", "80"))
    for info in (a, b):
        r = lab.from_container(info, "tcp", "169.254.169.254", "80")
        assert not _ok(r), r

    # /etc files for the container.
    hosts = Path(a["etc"]["/etc/hosts"]).read_text()
    assert "ctr-a" in hosts and (a["address"] or "") in hosts and "localhost" in hosts
    assert Path(a["etc"]["/etc/hostname"]).read_text() == "ctr-a\n"

    # Releasing a frees its ports and links; b keeps working.
    lab.release("ctr-a")
    assert not _ok(lab.from_host("tcp", "127.0.0.1", str(port["a"]["tcp"])))
    assert not _ok(lab.from_host("udp", "127.0.0.1", str(port["a"]["udp"])))
    assert _ok(lab.from_host("tcp", "127.0.0.1", str(port["b"]["tcp"])))
    assert _ok(lab.from_host("udp", "127.0.0.1", str(port["b"]["udp"])))
    left = lab.leftovers()
    assert "ctr-a" not in left["netns files"] + left["container dirs"]
    assert [e[0] for e in left["endpoints"]] == ["ctr-b"]
    lab.release("ctr-a")  # idempotent

    lab.release("ctr-b")
    assert not _ok(lab.from_host("tcp", "127.0.0.1", str(port["b"]["tcp"])))
    if not lab.rootless:
        # The bridge and its ruleset stay for the next container (no nft run, no bridge on its start)...
        left = lab.leftovers()
        assert len(left["links"]) == 1 and left["links"][0].startswith("flex") and len(left["nft tables"]) == 2
        assert not left["endpoints"] and not left["leases"] and not left["netns files"]
    lab.gc()  # ...until gc finds them idle
    assert lab.leftovers() == {"netns files": [], "container dirs": [], "links": [], "nft tables": [],
                               "processes": [], "leases": [], "endpoints": []}


def test_explicit_exceptions_open_only_what_they_name(lab) -> None:
    allow = ["169.254.169.254/32"] if lab.rootless else ["169.254.169.254/32", "host:7002"]
    lab.env = [f"FLEX_NET_ALLOW={','.join(allow)}"]
    a = lab.up("ctr-a")
    b = lab.up("ctr-b", "0:8000")
    r = lab.from_container(a, "tcp", "169.254.169.254", "80")
    assert r["ok"] and r["reply"].startswith("hello metadata "), r
    if not lab.rootless:
        gateway = a["address"].rsplit(".", 1)[0] + ".1"
        r = lab.from_container(a, "tcp", gateway, "7002")  # the runner's service, at the bridge address
        assert r["ok"] and r["reply"].startswith("hello host-any "), r
        assert not lab.from_container(a, "tcp", "10.250.0.1", "7002")["ok"]  # only where it was opened
        assert not lab.from_container(a, "tcp", b["address"], "8000")["ok"]
    else:
        assert not lab.from_container(a, "tcp", "10.250.0.1", "7002")["ok"]
        assert not lab.from_container(a, "tcp", "10.0.2.2", str(b["ports"][0]["host_port"]))["ok"]
    lab.release("ctr-a")
    lab.release("ctr-b")
    lab.gc()
    assert lab.leftovers()["nft tables"] == []


def test_a_container_with_net_admin_cannot_undo_its_isolation(lab) -> None:
    """dockerd, or anything else holding CAP_NET_ADMIN in the container's namespace, may rewrite every
    rule and route it can see there. Isolation must not depend on any of them."""
    a = lab.up("ctr-a")
    r = lab.in_container(a, "nft", "flush", "ruleset")
    assert r.returncode == 0, r.stderr
    assert lab.in_container(a, "nft", "list", "ruleset").stdout.strip() == ""
    gateway = "10.0.2.2" if lab.rootless else a["address"].rsplit(".", 1)[0] + ".1"
    assert _ok(lab.from_container(a, "tcp", "10.250.0.2", "80"))  # still a working network
    for probe in (("tcp", "10.250.0.1", "7002"), ("tcp", "169.254.169.254", "80"), ("tcp", gateway, "7002")):
        r = lab.from_container(a, *probe)
        assert not _ok(r), (probe, r)
    assert _ok(lab.from_host("tcp", "10.250.0.1", "7002"))
    lab.release("ctr-a")
    assert lab.leftovers()["processes"] == []
