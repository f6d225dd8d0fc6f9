"""Links of the root runner's network: the bridge, and one veth pair per container (rtnetlink).

Owns creating and deleting the bridge (``flex0``), the host end of each container's veth pair (named
``fx`` + 10 hex digits of the container id) and the container end (``eth0``, created directly inside the
container's namespace), the container's address, default route and per-namespace sysctls, with the few
rtnetlink requests of rtnl.py: pyroute2 cost ~100-250 ms to import on every start. Imports nothing from
flex but flex.errors and the network noun's own modules.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from flex.errors import FailedPrecondition
from flex.runtime.base.names import name_digest
from flex.runtime.network.netns import in_netns
from flex.runtime.network.rtnl import Rtnl

__all__ = ["VETH_PREFIX", "add_endpoint", "bridge_ports", "ensure_bridge", "link_exists", "mac_address",
           "remove_bridge", "remove_link", "routes_overlapping", "veth_name"]

from flex.runtime.network.firewall import VETH_PREFIX


def veth_name(container_id: str) -> str:
    """The host end's name: deterministic, so cleanup after a crash finds it from the id alone."""
    return VETH_PREFIX + name_digest(container_id).hex()[:10]


def mac_address(container_id: str) -> str:
    """The container end's MAC address (locally administered): deterministic, so the firewall can pin a
    port to it from the container id alone."""
    digest = name_digest(b"mac:" + container_id.encode())
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def _index(rtnl: Rtnl, name: str) -> int | None:
    try:
        return rtnl.index(name)
    except OSError as err:
        if err.errno == errno.ENODEV:
            return None
        raise


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


@contextlib.contextmanager
def _rtnl() -> Iterator[Rtnl]:
    rtnl = Rtnl()
    try:
        yield rtnl
    finally:
        rtnl.close()


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge exists, is up and holds the gateway address; IPv4 forwarding is on. Safe to repeat."""
    # A fixed MAC: left alone, a bridge takes the lowest of its ports' MACs, so one container's removal
    # changed the gateway's MAC under the others' ARP caches (their traffic stopped for a while).
    mac = mac_address("bridge:" + name)
    with _rtnl() as rtnl:
        try:
            rtnl.add_bridge(name, up=False, address=mac)
        except OSError as err:
            if err.errno != errno.EEXIST:  # another process was faster, or it is there already
                raise FailedPrecondition(f"cannot create bridge {name}: {err}") from err
        idx = rtnl.index(name)
        try:
            rtnl.add_address(idx, gateway, prefixlen)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise FailedPrecondition(f"cannot give bridge {name} the address {gateway}/{prefixlen}: {err}",
                                         hint="another interface may already use this subnet") from err
        rtnl.set_link(name, up=True, address=mac)
    # Outbound traffic of containers is routed; the installer turns this on too, but a reboot may not keep it.
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        if f.read().strip() != "1":
            _write_sysctl("net.ipv4.ip_forward", "1")


def add_endpoint(bridge: str, host_if: str, netns_path: Path, address: str, prefixlen: int,
                 gateway: str, *, mac: str | None = None) -> None:
    """Create the veth pair (container end straight into the namespace), configure the container side,
    then enslave the host end to the bridge and bring it up. The caller has already installed the
    firewall rules that name ``host_if``, so the port is never on the bridge unfiltered."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _rtnl() as rtnl:
            if _index(rtnl, host_if) is None:
                try:
                    rtnl.add_veth(host_if, "eth0", fd, None, None, up=False, peer_address=mac)
                except OSError as err:
                    raise FailedPrecondition(f"cannot create veth pair {host_if}: {err}") from err
    finally:
        os.close(fd)
    in_netns(netns_path, lambda: _configure_inside(address, prefixlen, gateway))
    with _rtnl() as rtnl:
        bidx = _index(rtnl, bridge)
        if bidx is None or _index(rtnl, host_if) is None:
            raise FailedPrecondition(f"bridge {bridge} or link {host_if} vanished during set-up")
        rtnl.set_link(host_if, up=True, master=bidx)


def _configure_inside(address: str, prefixlen: int, gateway: str) -> None:
    # Container root is an unprivileged uid outside, and this namespace usually belongs to the host's user
    # namespace: without these, a web server could not bind port 80 and `ping` could not open its socket.
    _write_sysctl("net.ipv4.ip_unprivileged_port_start", "0")
    _write_sysctl("net.ipv4.ping_group_range", "0 2147483647")
    # IPv4 only: no SLAAC or link-local chatter the filter would have to think about.
    _write_sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    _write_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    with _rtnl() as rtnl:  # made in this thread, so in the container's namespace
        rtnl.set_link("lo", up=True)
        eth = rtnl.index("eth0")
        try:
            rtnl.add_address(eth, address, prefixlen)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise
        rtnl.set_link("eth0", up=True)
        try:
            rtnl.add_default_route(eth, gateway)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise


def link_exists(name: str) -> bool:
    with _rtnl() as rtnl:
        return _index(rtnl, name) is not None


def remove_link(name: str) -> None:
    """Delete a link (a veth's peer goes with it); missing is fine."""
    with _rtnl() as rtnl:
        try:
            rtnl.delete_link(name)
        except OSError as err:
            if err.errno != errno.ENODEV:  # gone already, or meanwhile
                raise


def remove_bridge(name: str) -> None:
    remove_link(name)


def bridge_ports(bridge: str) -> list[str]:
    """Names of the links enslaved to ``bridge`` (empty if it does not exist)."""
    with _rtnl() as rtnl:
        bidx = _index(rtnl, bridge)
        if bidx is None:
            return []
        return [name for _, name, master in rtnl.links() if master == bidx]


def routes_overlapping(subnet: str) -> list[str]:
    """Routes of the main table (other than a default route) that overlap ``subnet``, as "DST/LEN dev IF"."""
    import ipaddress

    net = ipaddress.IPv4Network(subnet)
    out = []
    with _rtnl() as rtnl:
        names = {index: name for index, name, _ in rtnl.links()}
        for dst, dst_len, oif in rtnl.routes():
            if dst_len == 0:
                continue
            other = ipaddress.IPv4Network(f"{dst}/{dst_len}", strict=False)
            if other.overlaps(net):
                out.append(f"{other} dev {names.get(oif, '?') if oif is not None else '?'}")
    return out
