"""Links of the root runner's network: the bridge, and one veth pair per container (pyroute2).

Owns creating and deleting the bridge (``flex0``), the host end of each container's veth pair (named
``fx`` + 10 hex digits of the container id) and the container end (``eth0``, created directly inside the
container's namespace), the container's address, default route and per-namespace sysctls. pyroute2 costs
~100-250 ms to import, so it is imported inside the functions, never at module top: ``flex runtime run``
with ``--net none`` must not pay for it. Imports nothing from flex but flex.errors and net_ns.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from flex.errors import FailedPrecondition
from flex.runtime.network.netns import in_netns

__all__ = ["VETH_PREFIX", "add_endpoint", "bridge_ports", "ensure_bridge", "link_exists", "mac_address",
           "remove_bridge", "remove_link", "routes_overlapping", "veth_name"]

from flex.runtime.network.firewall import VETH_PREFIX


def veth_name(container_id: str) -> str:
    """The host end's name: deterministic, so cleanup after a crash finds it from the id alone."""
    return VETH_PREFIX + hashlib.sha256(container_id.encode()).hexdigest()[:10]


def mac_address(container_id: str) -> str:
    """The container end's MAC address (locally administered): deterministic, so the firewall can pin a
    port to it from the container id alone."""
    digest = hashlib.sha256(b"mac:" + container_id.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def _ipr() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge exists, is up and holds the gateway address; IPv4 forwarding is on. Safe to repeat."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except NetlinkError as err:
                if err.code != 17:  # EEXIST: another process was faster
                    raise FailedPrecondition(f"cannot create bridge {name}: {err}") from err
            idx = _index(ipr, name)
            assert idx is not None
        have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        # A fixed MAC: left alone, a bridge takes the lowest of its ports' MACs, so one container's removal
        # changed the gateway's MAC under the others' ARP caches (their traffic stopped for a while).
        ipr.link("set", index=idx, address=mac_address("bridge:" + name))
        if gateway not in have:
            try:
                ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
            except NetlinkError as err:
                if err.code != 17:
                    raise FailedPrecondition(f"cannot give bridge {name} the address {gateway}/{prefixlen}: {err}",
                                             hint="another interface may already use this subnet") from err
        ipr.link("set", index=idx, state="up")
    # Outbound traffic of containers is routed; the installer turns this on too, but a reboot may not keep it.
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        if f.read().strip() != "1":
            _write_sysctl("net.ipv4.ip_forward", "1")


def add_endpoint(bridge: str, host_if: str, netns_path: Path, address: str, prefixlen: int,
                 gateway: str, *, mac: str | None = None) -> None:
    """Create the veth pair (container end straight into the namespace), configure the container side,
    then enslave the host end to the bridge and bring it up. The caller has already installed the
    firewall rules that name ``host_if``, so the port is never on the bridge unfiltered."""
    from pyroute2.netlink.exceptions import NetlinkError

    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _ipr() as ipr:
            if _index(ipr, host_if) is None:
                try:
                    peer: dict[str, Any] = {"ifname": "eth0", "net_ns_fd": fd}
                    if mac is not None:
                        peer["address"] = mac
                    ipr.link("add", ifname=host_if, kind="veth", peer=peer)
                except NetlinkError as err:
                    raise FailedPrecondition(f"cannot create veth pair {host_if}: {err}") from err
    finally:
        os.close(fd)
    in_netns(netns_path, lambda: _configure_inside(address, prefixlen, gateway))
    with _ipr() as ipr:
        bidx = _index(ipr, bridge)
        idx = _index(ipr, host_if)
        if bidx is None or idx is None:
            raise FailedPrecondition(f"bridge {bridge} or link {host_if} vanished during set-up")
        ipr.link("set", index=idx, master=bidx, state="up")


def _configure_inside(address: str, prefixlen: int, gateway: str) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    # Container root is an unprivileged uid outside, and this namespace usually belongs to the host's user
    # namespace: without these, a web server could not bind port 80 and `ping` could not open its socket.
    _write_sysctl("net.ipv4.ip_unprivileged_port_start", "0")
    _write_sysctl("net.ipv4.ping_group_range", "0 2147483647")
    # IPv4 only: no SLAAC or link-local chatter the filter would have to think about.
    _write_sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    _write_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    with _ipr() as ipr:
        lo = _index(ipr, "lo")
        eth = _index(ipr, "eth0")
        assert lo is not None and eth is not None
        ipr.link("set", index=lo, state="up")
        have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=eth, family=2)}
        if address not in have:
            ipr.addr("add", index=eth, address=address, prefixlen=prefixlen)
        ipr.link("set", index=eth, state="up")
        try:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
        except NetlinkError as err:
            if err.code != 17:
                raise


def link_exists(name: str) -> bool:
    with _ipr() as ipr:
        return _index(ipr, name) is not None


def remove_link(name: str) -> None:
    """Delete a link (a veth's peer goes with it); missing is fine."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return
        try:
            ipr.link("del", index=idx)
        except NetlinkError as err:
            if err.code != 19:  # ENODEV: gone meanwhile
                raise


def remove_bridge(name: str) -> None:
    remove_link(name)


def bridge_ports(bridge: str) -> list[str]:
    """Names of the links enslaved to ``bridge`` (empty if it does not exist)."""
    with _ipr() as ipr:
        bidx = _index(ipr, bridge)
        if bidx is None:
            return []
        return [str(link.get("IFLA_IFNAME")) for link in ipr.get_links() if link.get("IFLA_MASTER") == bidx]


def routes_overlapping(subnet: str) -> list[str]:
    """Routes of the main table (other than a default route) that overlap ``subnet``, as "DST/LEN dev IF"."""
    import ipaddress

    net = ipaddress.IPv4Network(subnet)
    out = []
    with _ipr() as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get("RTA_DST")
            if not dst or r["dst_len"] == 0:
                continue
            other = ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False)
            if other.overlaps(net):
                out.append(f"{other} dev {names.get(r.get('RTA_OIF'), '?')}")
    return out
