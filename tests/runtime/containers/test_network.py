"""Containers and the network module (flex/runtime/network/networks.py), root and rootless: `--net none` is loopback
only, `--net private` (the default when the module is in the build) gives an interface, resolv.conf and
hostname, `-p` mappings are recorded and listed by `port`, and `rm` releases everything."""

from __future__ import annotations

import errno
import importlib.util
import json
import socket

import pytest

from tests.runtime.containers.conftest import Mode

pytestmark = pytest.mark.userns



def _interfaces(out: str) -> list[str]:
    return sorted(line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line)


def test_net_none_is_loopback_only(mode: Mode, image: str) -> None:
    out = mode.ok("run", "--rm", "--net", "none", image, "cat", "/proc/net/dev")
    assert _interfaces(out) == ["lo"]


def test_net_private_and_published_ports(mode: Mode, image: str) -> None:
    if importlib.util.find_spec("flex.runtime.network.networks") is None:
        r = mode.run("run", "--rm", "--net", "private", image, "true")
        assert r.code != 0 and "--net private" in r.stderr
        return
    out = mode.ok("run", "--rm", "--net=private", "--name", "netbox", image, "sh", "-c",
                  "cat /proc/net/dev; echo --; cat /etc/hostname; grep -c nameserver /etc/resolv.conf")
    devs, rest = out.split("--")
    assert len(_interfaces(devs)) == 2 and "lo" in _interfaces(devs)
    hostname, nameservers = rest.split()
    assert hostname == "netbox" and int(nameservers) >= 1
    mode.ok("run", "-d", "--net=private", "--name", "web", "-p", "127.0.0.1:0:8080", image, "sleep", "300")
    ports = mode.ok("port", "web").split()
    assert ports[0] == "8080/tcp" and ports[1] == "->" and ports[2].startswith("127.0.0.1:")
    assert int(ports[2].split(":")[1]) > 0, "a free host port was chosen"
    row = next(line for line in mode.ok("ps").splitlines() if " web " in line)
    assert f"{ports[2]}->8080/tcp" in row.split(), row
    assert json.loads(mode.ok("inspect", "web"))["ports"][0]["container_port"] == 8080
    mode.ok("rm", "-f", "web")
    assert "net:" not in mode.ok("gc"), "rm released the network"


def test_publish_without_network_is_refused(mode: Mode, image: str) -> None:
    r = mode.run("run", "--rm", "--net", "none", "-p", "8080:80", image, "true")
    assert r.code == 7 and "-p" in r.stderr


def test_net_host_needs_allow_host_network_on_a_root_runner(mode: Mode, image: str) -> None:
    with open("/proc/net/dev") as f:
        host_devs = _interfaces(f.read())
    if not mode.rootless:
        r = mode.run("run", "--rm", "--net", "host", image, "true")
        assert r.code != 0 and "--allow-host-network" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    out = mode.ok("run", "--rm", "--net", "host", "--allow-host-network", image, "cat", "/proc/net/dev")
    assert _interfaces(out) == host_devs


def test_run_help_shows_every_network_flag(mode: Mode) -> None:
    r = mode.run("run", "--help")
    assert r.code == 0, r.stderr
    for flag in ("--publish", "/udp", "--net", "--allow-host-network"):
        assert flag in r.stdout


def _held(port: int) -> bool:
    """Whether some process holds 127.0.0.1:port (TCP) on the host."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as err:
            assert err.errno == errno.EADDRINUSE, err
            return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_published_ports_go_with_the_run_and_come_back_with_start(mode: Mode, image: str) -> None:
    if importlib.util.find_spec("flex.runtime.network.networks") is None:
        pytest.skip("no network module in this build")
    fixed = _free_port()
    mode.ok("run", "-d", "--net=private", "--name", "web", "-p", f"127.0.0.1:{fixed}:8080",
            "-p", "127.0.0.1:0:8081", image, "sleep", "300")
    first = mode.ok("port", "web").split("\n")
    picked = int(first[1].rsplit(":", 1)[1])
    assert _held(fixed) and _held(picked)
    mode.ok("stop", "-t", "1", "web")
    assert not _held(fixed) and not _held(picked), "a stopped container holds no host port"
    assert mode.ok("port", "web") == ""
    mode.ok("start", "web")
    again = mode.ok("port", "web").split("\n")
    assert again[0] == f"8080/tcp -> 127.0.0.1:{fixed}"
    repicked = int(again[1].rsplit(":", 1)[1])
    assert _held(fixed) and _held(repicked)
    assert repicked == picked or not _held(picked), "one forwarder per run, not one more per start"
    mode.ok("rm", "-f", "web")
    assert not _held(fixed) and not _held(repicked), "rm -f stopped the forwarder (no gc needed)"
    assert "net:" not in mode.ok("gc")
