"""A root runner's container that owns its network namespace (nested Docker: its user namespace owns it,
so its root holds CAP_NET_ADMIN there) reaches the world, but whatever it does to its own MAC and address,
the host's pin lets through only its own: it cannot take another container's address. Lab of conftest.py."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.userns


def _world(lab: Any, info: dict[str, Any]) -> bool:
    return bool(lab.from_container(info, "tcp", "10.250.0.2", "80")["ok"])


def _ip(lab: Any, info: dict[str, Any], *args: str) -> None:
    r = lab.in_container(info, "ip", *args)
    assert r.returncode == 0, r.stderr  # the container's root may do this: it owns the namespace


def _readdress(lab: Any, info: dict[str, Any], old: str, new: str) -> None:
    gateway = old.rsplit(".", 1)[0] + ".1"
    _ip(lab, info, "addr", "del", f"{old}/24", "dev", "eth0")
    _ip(lab, info, "addr", "add", f"{new}/24", "dev", "eth0")
    _ip(lab, info, "route", "add", "default", "via", gateway)


def test_a_container_owning_its_netns_cannot_take_another_address_or_mac(lab: Any) -> None:
    if lab.rootless:
        pytest.skip("rootless containers always own their namespace; the outer namespace guards them")
    own = lab.up("own-a", "0:8000", own_netns=True)
    other = lab.up("ctr-b")
    assert own["netns"].startswith("/proc/"), "crun's namespace (the container's), not a netns file"
    owner = subprocess.run(["stat", "-L", "-c", "%i", f"/proc/{own['pid']}/ns/user"], capture_output=True,
                           text=True).stdout
    assert owner != subprocess.run(["stat", "-L", "-c", "%i", "/proc/self/ns/user"], capture_output=True,
                                   text=True).stdout
    assert _world(lab, own) and _world(lab, other)
    port = own["ports"][0]["host_port"]
    r = lab.from_host("tcp", "127.0.0.1", str(port))
    assert r["ok"] and r["reply"].startswith("hello own-a "), r

    # Another container's address: dropped at the host's end of the veth.
    _readdress(lab, own, own["address"], other["address"])
    assert not _world(lab, own)
    assert _world(lab, other), "the other container keeps its address"
    _readdress(lab, own, other["address"], own["address"])
    assert _world(lab, own), "its own address works again"

    # Another MAC: dropped too; its own again: works.
    mac = lab.in_container(own, "ip", "-o", "link", "show", "eth0").stdout.split("link/ether ")[1].split()[0]
    _ip(lab, own, "link", "set", "eth0", "address", "02:aa:bb:cc:dd:ee")
    assert not _world(lab, own)
    _ip(lab, own, "link", "set", "eth0", "address", mac)
    assert _world(lab, own)
    counters = subprocess.run(lab.in_host("nft", "list", "ruleset"), capture_output=True, text=True).stdout
    assert "a pinned port sends only from its own MAC and address" in counters

    lab.release("own-a")
    rules = subprocess.run(lab.in_host("nft", "list", "ruleset"), capture_output=True, text=True).stdout
    assert "pinned" not in rules, "its pin went with it"
    assert _world(lab, other)
    lab.release("ctr-b")
    lab.gc()
    assert not any(lab.leftovers().values()), lab.leftovers()
