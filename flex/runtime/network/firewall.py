"""The root runner's packet filter: two nftables tables flex owns, named after the bridge.

``table inet <bridge>`` keeps containers away from the runner itself (input), from each other when
routed, from link-local metadata (169.254.0.0/16) and from being reached from outside (forward), and
masquerades their outbound traffic (postrouting). ``table bridge <bridge>`` drops every frame the bridge
would forward from one container's port to another, so containers cannot talk even at layer 2 (with or
without br_netfilter).

The ruleset is installed when the bridge is created, replaced in ONE ``nft -f`` transaction
(``table X {}`` + ``delete table X`` + the new table), so there is never a moment with half the rules,
and removing flex's rules never touches anyone else's. Published ports do not need rules here: they are
served by a userspace forwarder on the host (see net_forward.py).

A container whose user namespace owns its network namespace (``--docker``: dockerd needs CAP_NET_ADMIN
there) may change its MAC and address and forge packets, so its port is *pinned*: the bridge table lets
through only ARP and IPv4 from that port's own MAC and address. The pins are part of the ruleset (rendered
from the endpoint records), so a re-render never drops one. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Sequence

from flex.errors import FailedPrecondition

__all__ = ["BLOCKED", "VETH_PREFIX", "Pin", "apply_rules", "remove_rules", "render", "rule_counters", "table_exists"]

# Never reachable from a container: link-local, where cloud metadata services live (169.254.169.254).
BLOCKED = ("169.254.0.0/16",)
VETH_PREFIX = "fx"  # host ends of containers' veth pairs (net_bridge names them)


def _q(name: str) -> str:
    return json.dumps(name)  # nft accepts double-quoted interface names


Pin = tuple[str, str, str]  # (host end of the veth, the container end's MAC, its IPv4 address)


def render(bridge: str, subnet: str, *, allow: Sequence[str] = (), host_ports: Sequence[str] = (),
           pins: Sequence[Pin] = ()) -> str:
    """The ``nft -f`` script that atomically (re)creates flex's tables for ``bridge``.

    The rules name no container: they match the bridge, the subnet and the veth prefix ``fx``, so a
    container's start or removal needs no rule change (an ``nft`` run costs 10-30 ms). Spoofing needs no
    per-port pin either when a container's namespace belongs to the host's user namespace, where container
    root holds neither CAP_NET_ADMIN nor CAP_NET_RAW: it cannot change its address or forge packets.
    ``pins`` are the ports of containers that own their namespace: only their own MAC and address pass.
    ``allow`` lists extra destinations (CIDRs) containers may reach although they would be blocked;
    ``host_ports`` ("PORT/tcp", "PORT/udp") are services of the runner itself that containers may reach
    through the bridge's address (the gateway)."""
    br = _q(bridge)
    blocked = ", ".join(BLOCKED)
    allowed = "".join(f'        iifname {br} ip daddr {a} accept comment "allowed by configuration"\n'
                      for a in allow)
    gateway = str(ipaddress.IPv4Network(subnet).network_address + 1)
    opened = "".join(f'        iifname {br} ip daddr {gateway} {proto} dport {port} accept '
                     f'comment "allowed by configuration"\n'
                     for port, proto in (hp.split("/") for hp in host_ports))
    pinned = _render_pins(pins)
    return f"""table inet {bridge} {{}}
delete table inet {bridge}
table bridge {bridge} {{}}
delete table bridge {bridge}
table inet {bridge} {{
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname {br} ct state established,related accept
{opened}        iifname {br} counter drop comment "containers never reach the runner itself"
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname {br} oifname {br} counter drop comment "container to container"
        oifname {br} ct state established,related accept
        oifname {br} counter drop comment "nothing outside opens connections to containers"
{allowed}        iifname {br} ip daddr {{ {blocked} }} counter drop comment "link-local metadata"
        iifname {br} ip saddr != {subnet} counter drop comment "not an address of this network"
        iifname {br} meta nfproto ipv6 counter drop comment "containers are IPv4 only"
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != {br} masquerade
    }}
}}
table bridge {bridge} {{
{pinned}    chain forward {{
        type filter hook forward priority filter; policy accept;
        # `meta ibrname` would say "any port of this bridge" but needs nft_meta_bridge, which some
        # kernels lack (this machine's); every container port is named fx..., on this bridge or another.
        iifname "{VETH_PREFIX}*" counter drop comment "bridge ports never talk to each other"
    }}
}}
"""


def _render_pins(pins: Sequence[Pin]) -> str:
    if not pins:
        return ""
    ports = ", ".join(_q(p[0]) for p in pins)
    elements = ", ".join(f"{_q(port)} . {mac} . {ipaddress.IPv4Address(addr)}" for port, mac, addr in pins)
    return f"""    set pinned {{
        type ifname
        elements = {{ {ports} }}
    }}
    set pins {{
        type ifname . ether_addr . ipv4_addr
        elements = {{ {elements} }}
    }}
    chain prerouting {{
        type filter hook prerouting priority filter - 10; policy accept;
        iifname != @pinned accept
        iifname . ether saddr . ip saddr @pins accept
        iifname . ether saddr . arp saddr ip @pins iifname . arp saddr ether . arp saddr ip @pins accept
        counter drop comment "a pinned port sends only from its own MAC and address"
    }}
"""


def _nft() -> str:
    # /usr/sbin is not on an ordinary user's PATH on Debian.
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if path is None:
        raise FailedPrecondition("nft is not installed; flex isolates containers with nftables",
                                 hint="apt-get install nftables (installer/install.sh does)")
    return path


def _run(script: str) -> None:
    proc = subprocess.run([_nft(), "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise FailedPrecondition(f"nftables refused flex's rules: {first}",
                                 hint="is the nf_tables kernel module available? (`nft list ruleset` as root)")


def apply_rules(bridge: str, subnet: str, *, allow: Sequence[str] = (), host_ports: Sequence[str] = (),
                pins: Sequence[Pin] = ()) -> None:
    _run(render(bridge, subnet, allow=allow, host_ports=host_ports, pins=pins))


def remove_rules(bridge: str) -> None:
    """Delete flex's tables for ``bridge``; missing tables are fine."""
    _run(f"table inet {bridge} {{}}\ndelete table inet {bridge}\n"
         f"table bridge {bridge} {{}}\ndelete table bridge {bridge}\n")


def table_exists(family: str, name: str) -> bool:
    proc = subprocess.run([_nft(), "list", "table", family, name], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0


def rule_counters(family: str, table: str) -> dict[str, int]:
    """Packets counted per rule comment (rules without a comment are left out)."""
    proc = subprocess.run([_nft(), "-j", "list", "table", family, table], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        return {}
    out: dict[str, int] = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                out[rule["comment"]] = out.get(rule["comment"], 0) + int(expr["counter"]["packets"])
    return out
