"""Container networking: the interface the containers code calls, and the endpoint records behind it.

Owns the ``net_endpoints`` table (one row per container that asked for a network: its mode, namespace
file, veth, address, requested and bound ports, helper pids) and the per-container files under
FLEX_HOME/run/net/<id>/ (hosts, hostname, resolv.conf, slirp4netns API socket, logs). Modes:

- ``none``: loopback only (crun makes the namespace); flex writes /etc/hosts, hostname, an empty resolv.conf.
- ``private`` on a root runner: a namespace file, a veth pair on the bridge ``flex0``, an address leased
  from net_ipam, NAT out, nftables isolation (net_firewall), published ports by a forwarder (net_forward).
  With ``own_netns`` (nested Docker) crun makes the namespace inside the container's user namespace, and
  ``attach`` adds the veth pair there, its port pinned to the container's MAC and address.
- ``private`` rootless: crun makes the namespace; ``attach`` runs slirp4netns on the container's pid with
  the host's loopback hidden, installs a guard table and adds port forwards through its API (net_slirp).
- ``host``: the runner's own network; refused on a root runner unless ``allow_host_network``.

Lifecycle: prepare (before ``crun create``) -> attach(pid) (before ``crun start``) -> release. The row is
written BEFORE anything is created and every name is derived from the container id, so ``release`` and
``gc`` can always find and remove what a process killed mid-set-up left behind. Links are made with
rtnl.py's few rtnetlink requests, not pyroute2 (whose import cost ~100 ms per start). Imports nothing
from flex but flex.errors and the runtime's own modules.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flex.atomic import write_atomic
from flex.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    UsageError,
)
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.base.names import name_digest
from flex.runtime.network.ipam import IPAM
from flex.runtime.network.ipam import SCHEMA as IPAM_SCHEMA
from flex.runtime.network.rootless import outer as net_outer
from flex.runtime.network.rootless import slirp as net_slirp

__all__ = ["AttachedNetwork", "NetworkRequest", "Networks", "PortMapping", "PreparedNetwork", "parse_publish"]

DEFAULT_BRIDGE = "flex0"
DEFAULT_SUBNET = "10.90.0.0/16"
MODES = ("none", "private", "host")

_SCHEMA = [*IPAM_SCHEMA, """CREATE TABLE IF NOT EXISTS net_endpoints (
    container_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    rootless INTEGER NOT NULL,
    bridge TEXT,
    netns_path TEXT,
    host_if TEXT,
    address TEXT,
    hostname TEXT NOT NULL,
    requested TEXT NOT NULL,
    bound TEXT NOT NULL DEFAULT '[]',
    helper_pid INTEGER,
    created_at REAL NOT NULL
)"""]


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str  # "tcp" | "udp"

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}->{self.container_port}/{self.protocol}"


_PUBLISH = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?"
                      r"(?:(?P<host>\d+):)?(?P<port>\d+)(?:/(?P<proto>\w+))?$")


def parse_publish(value: str) -> PortMapping:
    """``[HOSTIP:]HOSTPORT:PORT[/tcp|/udp]`` (or just ``PORT``, meaning ``0:PORT``); HOSTIP defaults to
    127.0.0.1, HOSTPORT 0 picks a free port when the container starts."""
    hint = "expected [HOSTIP:]HOSTPORT:PORT[/tcp|/udp], e.g. 8080:80 or 127.0.0.1:0:53/udp"
    m = _PUBLISH.match(value.strip())
    if m is None:
        raise UsageError(f"invalid --publish value {value!r}", hint=hint)
    ip = (m["ip"] or "127.0.0.1").strip("[]")
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        raise UsageError(f"invalid --publish value {value!r}: {ip!r} is not an IP address", hint=hint) from None
    proto = (m["proto"] or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid --publish value {value!r}: protocol must be tcp or udp", hint=hint)
    host_port = int(m["host"] or 0)
    port = int(m["port"])
    if not 0 <= host_port <= 65535 or not 1 <= port <= 65535:
        raise UsageError(f"invalid --publish value {value!r}: ports are 1-65535 (host port 0 = pick one)",
                         hint=hint)
    return PortMapping(ip, host_port, port, proto)


@dataclass
class NetworkRequest:
    mode: str  # "none" | "private" | "host"
    ports: list[PortMapping] = field(default_factory=list)
    hostname: str = "flex"
    allow_host_network: bool = False
    # Root runner: the container's user namespace owns its network namespace (crun makes it), so its root
    # holds CAP_NET_ADMIN there (dockerd needs it, and crun needs it to mount a fresh sysfs). Rootless
    # containers always own theirs.
    own_netns: bool = False


@dataclass
class PreparedNetwork:
    netns_path: str | None              # join this netns (root, private); None = crun creates a new one
    etc_files: dict[str, Path]          # "/etc/resolv.conf", "/etc/hosts", "/etc/hostname" -> host files
    host_network: bool = False          # mode host: put no network namespace in the spec at all


@dataclass
class AttachedNetwork:
    ports: list[PortMapping]            # with the real host ports chosen
    address: str | None


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _atomic_write(path: Path, text: str) -> None:
    # No fsync: these live under FLEX_HOME/run and are rewritten by every prepare; the rename alone
    # keeps readers (and the container's bind mounts) from ever seeing half a file.
    write_atomic(path, text, mode=0o644, durable=False)


def _host_resolv(rootless: bool) -> str:
    """The host's resolver config for a container: nameservers it can reach, search and options kept."""
    lines: list[str] = []
    servers: list[str] = []
    for candidate in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
        try:
            text = candidate.read_text()
        except OSError:
            continue
        lines = [ln for ln in text.splitlines() if ln.split()[:1] in (["search"], ["options"], ["domain"])]
        servers = [ln.split()[1] for ln in text.splitlines() if ln.split()[:1] == ["nameserver"] and
                   len(ln.split()) > 1]
        # A loopback resolver (systemd-resolved's 127.0.0.53) is useless inside a namespace; its upstream
        # list is in /run/systemd/resolve/resolv.conf.
        if rootless or any(not ipaddress.ip_address(s.split("%")[0]).is_loopback for s in servers
                           if _is_ip(s)):
            break
    if rootless:
        # slirp4netns answers DNS on 10.0.2.3 with the host's own resolver, loopback ones included.
        servers = [net_slirp.GUEST_DNS] if servers else []
    else:
        servers = [s for s in servers if _is_ip(s) and not ipaddress.ip_address(s.split("%")[0]).is_loopback]
    out = [f"nameserver {s}" for s in servers] + lines
    return "".join(f"{ln}\n" for ln in out)


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s.split("%")[0])
        return True
    except ValueError:
        return False


class Networks:
    """Networks of containers on this runner. One instance per process; safe across processes."""

    def __init__(self, home: Home, db: MetadataDB, *, rootless: bool, bridge: str | None = None,
                 subnet: str | None = None, allow: Sequence[str] | None = None):
        self.home = home
        self.db = db
        self.rootless = rootless
        own_bridge, own_subnet = _bridge_for(home)
        self.bridge = bridge or os.environ.get("FLEX_NET_BRIDGE") or own_bridge
        self.ipam = IPAM(db, subnet or os.environ.get("FLEX_NET_SUBNET") or own_subnet)
        db.ensure_schema("network", 1, _SCHEMA)
        self.allow_cidrs, self.allow_host_ports = _parse_allow(
            allow if allow is not None else [a for a in os.environ.get("FLEX_NET_ALLOW", "").split(",") if a])
        if rootless and self.allow_host_ports:
            raise InvalidArgument("host:PORT exceptions need a root runner: slirp4netns hides the host's "
                                  "loopback from rootless containers as a whole",
                                  hint="drop the host:PORT entries from FLEX_NET_ALLOW")

    # ----- paths and records ------------------------------------------------------------------------

    def _dir(self, container_id: str) -> Path:
        return self.home.run / "net" / container_id

    def _netns_path(self, container_id: str) -> Path:
        return self.home.run / "netns" / container_id

    def _forwarder_tag(self, container_id: str) -> str:
        return f"flexnet:{self.home.root}:{container_id}"

    def _api_socket(self, container_id: str) -> Path:
        path = self._dir(container_id) / "slirp.sock"
        if len(str(path)) < 100:  # sun_path holds 108 bytes
            return path
        digest = name_digest(str(path)).hex()[:20]
        import tempfile  # (only for a long FLEX_HOME: it costs ~1 ms to import)

        return Path(tempfile.gettempdir()) / f"flexnet-{os.getuid()}-{digest}.sock"

    def _tag(self, container_id: str) -> str:
        """The argument that marks this container's helper processes (forwarder or slirp4netns)."""
        if self.rootless:
            return f"--api-socket={self._api_socket(container_id)}"
        return self._forwarder_tag(container_id)

    def _row(self, container_id: str) -> dict[str, Any] | None:
        row = self.db.query_one("SELECT * FROM net_endpoints WHERE container_id = ?", (container_id,))
        return dict(row) if row is not None else None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialises changes to the shared bridge and ruleset across processes."""
        with open(self.home.run / "net.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # ----- the interface ----------------------------------------------------------------------------

    def prepare(self, container_id: str, req: NetworkRequest) -> PreparedNetwork:
        if not _ID.match(container_id):
            raise InvalidArgument(f"invalid container id {container_id!r} for networking")
        if req.mode not in MODES:
            raise UsageError(f"unknown network mode {req.mode!r}", hint="use --net none, private or host")
        # Container names may hold characters a hostname may not (my_app): map them, as podman does.
        hostname = re.sub(r"[^A-Za-z0-9.-]+", "-", req.hostname)[:63].strip("-.") or "flex"
        if not _HOSTNAME.match(hostname):
            raise InvalidArgument(f"invalid hostname {req.hostname!r}",
                                  hint="letters, digits and '-', dot-separated labels of at most 63 characters")
        req = NetworkRequest(req.mode, list(req.ports), hostname, req.allow_host_network, req.own_netns)
        if req.ports and req.mode != "private":
            raise UsageError(f"--publish needs --net private (this container has --net {req.mode})",
                             hint="with --net host the container's ports are the host's ports already")
        if req.mode == "host" and not self.rootless and not req.allow_host_network:
            raise PermissionDenied("host networking is refused on a root runner: the container would see "
                                   "every host interface and loopback service",
                                   hint="pass --allow-host-network if this container really needs it")
        if self._row(container_id) is not None:
            raise Conflict(f"container {container_id!r} already has a network", hint="release it first")
        d = self._dir(container_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
        bridged = req.mode == "private" and not self.rootless
        netns_file = bridged and not req.own_netns  # else crun makes it; the record's netns_path is NULL
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO net_endpoints (container_id, mode, rootless, bridge, netns_path, host_if, address,"
                " hostname, requested, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (container_id, req.mode, int(self.rootless), self.bridge if bridged else None,
                 str(self._netns_path(container_id)) if netns_file else None,
                 self._veth(container_id) if bridged else None, None, req.hostname,
                 json.dumps([asdict(p) for p in req.ports]), time.time()))
        try:
            address = self._prepare_bridged(container_id, netns_file=netns_file) if bridged else None
            return PreparedNetwork(
                netns_path=str(self._netns_path(container_id)) if netns_file else None,
                etc_files=self._write_etc(container_id, req, address),
                host_network=req.mode == "host")
        except BaseException:
            self.release(container_id)
            raise

    def attach(self, container_id: str, pid: int) -> AttachedNetwork:
        row = self._row(container_id)
        if row is None:
            raise NotFound(f"container {container_id!r} has no prepared network")
        if row["mode"] != "private":
            return AttachedNetwork(ports=[], address=None)
        if row["helper_pid"] is not None or json.loads(row["bound"]):
            self.detach(container_id)  # a run whose end nobody recorded (its monitor was killed)
        requested = [PortMapping(**p) for p in json.loads(row["requested"])]
        helper: int | None
        try:
            if self.rootless:
                bound, helper = self._attach_slirp(container_id, pid, requested)
                address: str | None = net_slirp.GUEST_ADDRESS
            else:
                if row["netns_path"] is None:
                    self._attach_own_netns(container_id, pid, row["address"])
                bound, helper = self._attach_forwarder(container_id, row["address"], requested)
                address = row["address"]
        except BaseException:
            self._stop_helpers(container_id, forwarder=True)
            raise
        with self.db.transaction() as conn:
            conn.execute("UPDATE net_endpoints SET bound = ?, helper_pid = ? WHERE container_id = ?",
                         (json.dumps([asdict(p) for p in bound]), helper, container_id))
        return AttachedNetwork(ports=bound, address=address)

    def detach(self, container_id: str) -> None:
        """Stop what ``attach`` started for one run of the container (its port forwarder; rootless,
        slirp4netns and the UDP forwarder) and keep the network for the next start: a stopped container
        holds no host port, as with Docker, and a start finds no old forwarder in its way. Safe to repeat."""
        row = self._row(container_id)
        if row is None or row["mode"] != "private":
            return
        self._stop_helpers(container_id, row["helper_pid"], forwarder=True)
        (self._dir(container_id) / "forwarder.pid").unlink(missing_ok=True)
        with self.db.transaction() as conn:
            conn.execute("UPDATE net_endpoints SET bound = '[]', helper_pid = NULL WHERE container_id = ?",
                         (container_id,))

    def ports(self, container_id: str) -> list[PortMapping]:
        row = self._row(container_id)
        if row is None:
            return []
        return [PortMapping(**p) for p in json.loads(row["bound"])]

    def release(self, container_id: str) -> None:
        """Remove everything prepare/attach made for the container; safe to repeat and after a crash."""
        row = self._row(container_id)
        if row is None or (row["mode"] == "private" and (self.rootless or json.loads(row["requested"]))):
            # Rootless, slirp4netns is the recorded helper; a UDP forwarder is found by its tag.
            udp = row is None or any(p["protocol"] == "udp" for p in json.loads(row["requested"]))
            self._stop_helpers(container_id, row["helper_pid"] if row is not None else None,
                               forwarder=self.rootless and udp)
        if not self.rootless:
            from flex.runtime.network import bridge as net_bridge
            from flex.runtime.network import netns as net_ns

            with self._lock():
                net_bridge.remove_link(self._veth(container_id))
                net_ns.remove_netns(self._netns_path(container_id))
                self.ipam.release(container_id)
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM net_endpoints WHERE container_id = ?", (container_id,))
                if row is not None and row["bridge"] is not None and row["netns_path"] is None \
                        and net_bridge.link_exists(self.bridge):
                    self._apply_rules()  # a pinned port's pin goes with it
                # The bridge and its ruleset stay for the next container (as docker0 and CNI's bridge do):
                # removing and re-making them cost two nft runs and a bridge per `run --rm`. gc() removes
                # an idle bridge.
        else:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM net_endpoints WHERE container_id = ?", (container_id,))
        api = self._api_socket(container_id)
        api.unlink(missing_ok=True)
        d = self._dir(container_id)
        if d.exists():
            for child in d.iterdir():
                child.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                d.rmdir()

    def gc(self, live_ids: set[str]) -> list[str]:
        """Release every network that belongs to no live container: records, namespace files, helper
        processes, leases and file directories, including what a crash left without a record."""
        seen = {str(r["container_id"]) for r in self.db.query("SELECT container_id FROM net_endpoints")}
        seen |= set(self.ipam.leases())
        for sub in (self.home.run / "net", self.home.run / "netns"):
            if sub.is_dir():
                seen |= {p.name for p in sub.iterdir() if _ID.match(p.name)}
        prefix = f"flexnet:{self.home.root}:"
        for pid in _helper_pids(prefix):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                for arg in f.read().split(b"\0"):
                    if arg.startswith(prefix.encode()):
                        seen.add(arg.decode()[len(prefix):])
        dead = sorted(seen - live_ids)
        for container_id in dead:
            self.release(container_id)
        if not self.rootless:
            self._sweep_orphan_links()
            self._remove_idle_bridge()
        return dead

    # ----- root: bridge, namespace, firewall, forwarder ---------------------------------------------

    @staticmethod
    def _veth(container_id: str) -> str:
        from flex.runtime.network.bridge import veth_name

        return veth_name(container_id)

    def _prepare_bridged(self, container_id: str, *, netns_file: bool) -> str:
        from flex.runtime.network import bridge as net_bridge
        from flex.runtime.network import netns as net_ns

        address = self.ipam.lease(container_id)
        with self.db.transaction() as conn:
            conn.execute("UPDATE net_endpoints SET address = ? WHERE container_id = ?", (address, container_id))
        netns = self._netns_path(container_id)
        if netns_file:
            net_ns.create_netns(netns)
        with self._lock():
            if not net_bridge.link_exists(self.bridge):
                # Only the first container pays for the bridge and ruleset; gc() re-checks both later.
                self._check_subnet()
                net_bridge.ensure_bridge(self.bridge, str(self.ipam.gateway), self.ipam.network.prefixlen)
                self._apply_rules()  # filtered before the first port joins the bridge
            if netns_file:
                net_bridge.add_endpoint(self.bridge, self._veth(container_id), netns, address,
                                        self.ipam.network.prefixlen, str(self.ipam.gateway))
        return address

    def _attach_own_netns(self, container_id: str, pid: int, address: str) -> None:
        """The veth pair into the namespace crun made for ``pid`` (created, not started), once the port's
        pin is in the ruleset: the container's root may change its MAC and address there, the pin on the
        host's side of the veth is out of its reach."""
        from flex.runtime.network import bridge as net_bridge

        with self._lock():
            self._apply_rules()  # its record names its port and address: the pin is in
            net_bridge.add_endpoint(self.bridge, self._veth(container_id), Path(f"/proc/{pid}/ns/net"), address,
                                    self.ipam.network.prefixlen, str(self.ipam.gateway),
                                    mac=net_bridge.mac_address(container_id))

    def _pins(self) -> list[tuple[str, str, str]]:
        """(port, MAC, address) of every container on this bridge that owns its network namespace."""
        from flex.runtime.network.bridge import mac_address

        rows = self.db.query("SELECT container_id, host_if, address FROM net_endpoints WHERE bridge = ? AND "
                             "rootless = 0 AND netns_path IS NULL AND host_if IS NOT NULL AND address IS NOT NULL",
                             (self.bridge,))
        return [(str(r["host_if"]), mac_address(str(r["container_id"])), str(r["address"])) for r in rows]

    def _apply_rules(self) -> None:
        from flex.runtime.network import firewall as net_firewall

        net_firewall.apply_rules(self.bridge, self.ipam.subnet, allow=self.allow_cidrs,
                                 host_ports=self.allow_host_ports, pins=self._pins())

    def _check_subnet(self) -> None:
        """Refuse a subnet another interface already routes (a VPN, docker0, a second flex install)."""
        from flex.runtime.network import bridge as net_bridge

        for route in net_bridge.routes_overlapping(self.ipam.subnet):
            raise FailedPrecondition(f"subnet {self.ipam.subnet} for bridge {self.bridge} overlaps {route}",
                                     hint="set FLEX_NET_SUBNET to a free private range")

    def _remove_idle_bridge(self) -> None:
        """With no container left on this bridge (in any database: the kernel's port list decides),
        remove its rules and the bridge."""
        from flex.runtime.network import bridge as net_bridge
        from flex.runtime.network import firewall as net_firewall

        with self._lock():
            rows = self.db.query("SELECT 1 FROM net_endpoints WHERE bridge = ? AND rootless = 0", (self.bridge,))
            if not rows and not net_bridge.bridge_ports(self.bridge):
                net_bridge.remove_bridge(self.bridge)
                net_firewall.remove_rules(self.bridge)

    def _attach_forwarder(self, container_id: str, address: str,
                          requested: list[PortMapping]) -> tuple[list[PortMapping], int | None]:
        from flex.runtime.network import forward as net_forward

        if not requested:
            return [], None
        listeners = []
        try:
            for p in requested:
                try:
                    listeners.append(net_forward.bind_listener(p.host_ip, p.host_port, p.protocol, address,
                                                               p.container_port))
                except OSError as err:
                    raise Conflict(f"cannot publish {p}: {err.strerror or err}",
                                   hint="pick another host port, or 0 for a free one") from err
            pid, _ = net_forward.spawn_forwarder(self._tag(container_id), listeners,
                                                 str(self._dir(container_id) / "forwarder.log"))
            bound = [PortMapping(p.host_ip, ls.host_port, p.container_port, p.protocol)
                     for p, ls in zip(requested, listeners, strict=True)]
            return bound, pid
        finally:
            for ls in listeners:
                ls.sock.close()

    def _sweep_orphan_links(self) -> None:
        from flex.runtime.network import bridge as net_bridge

        rows = self.db.query("SELECT host_if FROM net_endpoints WHERE host_if IS NOT NULL")
        known = {str(r["host_if"]) for r in rows}
        with self._lock():
            for name in net_bridge.bridge_ports(self.bridge):
                if name.startswith(net_bridge.VETH_PREFIX) and name not in known:
                    net_bridge.remove_link(name)
            if known and net_bridge.link_exists(self.bridge):
                # Self-heal: someone took the bridge down, or a firewall reload (`nft flush ruleset`)
                # dropped flex's tables.
                net_bridge.ensure_bridge(self.bridge, str(self.ipam.gateway), self.ipam.network.prefixlen)
                self._apply_rules()

    # ----- rootless: slirp4netns ----------------------------------------------------------------------

    def _attach_slirp(self, container_id: str, pid: int,
                      requested: list[PortMapping]) -> tuple[list[PortMapping], int]:
        """slirp4netns for the namespace and TCP ports; UDP ports by a forwarder whose helper makes its
        sockets inside the container's namespace (libslirp 1.2.0 drops the replies of a UDP hostfwd to
        127.0.0.1 once --disable-host-loopback is set, and that flag is what hides the host's loopback)."""
        api = self._api_socket(container_id)
        udp = [p for p in requested if p.protocol == "udp"]
        # Started first: its Python start-up then overlaps slirp4netns's and the container's own start.
        fwd_pid, ready_fd, udp_bound = self._spawn_udp_forwarder(container_id, pid, udp) if udp else (0, -1, [])
        outer: net_outer.OuterNetns | None = None
        try:
            guard = net_outer.guard_script(["169.254.0.0/16", *net_slirp.host_addresses()], self.allow_cidrs)
            outer = net_outer.open_outer(pid, f"{net_slirp.GUEST_ADDRESS}/24", net_slirp.GUEST_GATEWAY, guard,
                                         nft_tool=net_slirp.tool("nft"))
            helper = net_slirp.start_slirp(outer.pid, api,
                                           self._dir(container_id) / "slirp4netns.log", meanwhile=outer.wait)
            with self.db.transaction() as conn:
                conn.execute("UPDATE net_endpoints SET helper_pid = ? WHERE container_id = ?",
                             (helper, container_id))
            outer.wait_links_up()
            tcp_bound = [PortMapping(p.host_ip, net_slirp.add_hostfwd(api, p.host_ip, p.host_port,
                                                                      p.container_port, "tcp"),
                                     p.container_port, "tcp") for p in requested if p.protocol == "tcp"]
            if ready_fd >= 0:
                from flex.runtime.network import forward as net_forward

                fd, ready_fd = ready_fd, -1
                if (why := net_forward.early_failure(fd)) is not None:
                    raise Unavailable(f"the UDP port forwarder for {container_id!r} did not start: {why}",
                                      hint=f"see {self._dir(container_id) / 'forwarder.log'}")
        except BaseException:
            if fwd_pid:
                # By pid: a forwarder spawned a moment ago may still be in execve, where a search of
                # /proc by its tag would miss it (stop_process waits that out).
                net_slirp.stop_process(fwd_pid, self._forwarder_tag(container_id))
            raise
        finally:
            if ready_fd >= 0:
                os.close(ready_fd)
            if outer is not None:
                outer.close()  # slirp4netns's tap holds the outer namespace from here on
        tcp_iter, udp_iter = iter(tcp_bound), iter(udp_bound)
        return [next(tcp_iter) if p.protocol == "tcp" else next(udp_iter) for p in requested], helper

    def _spawn_udp_forwarder(self, container_id: str, pid: int,
                             udp: list[PortMapping]) -> tuple[int, int, list[PortMapping]]:
        """Bind the UDP host ports and start the forwarder on the namespaces of ``pid``; returns its pid, the
        fd to wait on for its helper and the ports as bound. Release finds it by its tag, as after a crash."""
        from flex.runtime.network import forward as net_forward

        listeners = []
        ns_fds: list[int] = []
        try:
            for p in udp:
                try:
                    listeners.append(net_forward.bind_listener(p.host_ip, p.host_port, "udp", "127.0.0.1",
                                                               p.container_port))
                except OSError as err:
                    raise Conflict(f"cannot publish {p}: {err.strerror or err}",
                                   hint="pick another host port, or 0 for a free one") from err
            try:
                # Opened here, by pid, right after `crun create`: the forwarder then holds the namespaces
                # themselves and never has to trust a pid that could be reused.
                ns_fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in ("user", "net")]
            except OSError as err:
                raise NotFound(f"cannot open the namespaces of container {container_id!r} (pid {pid}): "
                               f"{err.strerror}") from err
            fwd_pid, rfd = net_forward.spawn_forwarder(self._forwarder_tag(container_id), listeners,
                                                    str(self._dir(container_id) / "forwarder.log"),
                                                    netns_fds=(ns_fds[0], ns_fds[1]))
            assert rfd is not None
            # Recorded for release, which may come while the forwarder is still in execve (its command
            # line, and so its tag, not yet readable) now that attach does not wait for it.
            _atomic_write(self._dir(container_id) / "forwarder.pid", f"{fwd_pid}\n")
            return fwd_pid, rfd, [PortMapping(p.host_ip, ls.host_port, p.container_port, "udp")
                                  for p, ls in zip(udp, listeners, strict=True)]
        finally:
            for ls in listeners:
                ls.sock.close()
            for fd in ns_fds:
                os.close(fd)

    # ----- both -----------------------------------------------------------------------------------------

    def _stop_helpers(self, container_id: str, known_pid: int | None = None, *, forwarder: bool = False) -> None:
        """Stop the container's forwarder or slirp4netns. A recorded pid is enough once attach finished;
        otherwise (a crash between spawn and record) search /proc for the tag. Rootless, ``forwarder``
        also stops a UDP forwarder (found by its tag) and its namespaced helper (same command line)."""
        tag = self._tag(container_id)
        pids = [known_pid] if known_pid else list(net_slirp.find_processes(tag))
        for pid in pids:
            net_slirp.stop_process(pid, tag)
        if self.rootless and forwarder:
            ftag = self._forwarder_tag(container_id)
            with contextlib.suppress(OSError, ValueError):
                net_slirp.stop_process(int((self._dir(container_id) / "forwarder.pid").read_text()), ftag)
            for pid in net_slirp.find_processes(ftag):  # its helper, or one a crash left unrecorded
                net_slirp.stop_process(pid, ftag)

    def _write_etc(self, container_id: str, req: NetworkRequest, address: str | None) -> dict[str, Path]:
        d = self._dir(container_id)
        files = {"/etc/hostname": d / "hostname", "/etc/hosts": d / "hosts", "/etc/resolv.conf": d / "resolv.conf"}
        if req.mode == "host":
            hostname = socket.gethostname()
            try:
                hosts = Path("/etc/hosts").read_text()
            except OSError:
                hosts = "127.0.0.1\tlocalhost\n"
            resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
        else:
            hostname = req.hostname
            own = address or (net_slirp.GUEST_ADDRESS if req.mode == "private" else "127.0.1.1")
            hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                     f"{own}\t{hostname}\n")
            resolv = _host_resolv(self.rootless) if req.mode == "private" else ""
        _atomic_write(files["/etc/hostname"], f"{hostname}\n")
        _atomic_write(files["/etc/hosts"], hosts)
        _atomic_write(files["/etc/resolv.conf"], resolv)
        return files


def _parse_allow(entries: Sequence[str]) -> tuple[list[str], list[str]]:
    """Exceptions to isolation on a root runner (``FLEX_NET_ALLOW``, comma-separated): a CIDR containers
    may reach although it is blocked (e.g. a metadata proxy on 169.254.x), or ``host:PORT[/udp]``, a
    service of the runner containers may reach at the bridge address (a proxy or cache bound there)."""
    cidrs: list[str] = []
    ports: list[str] = []
    hint = "entries are CIDRs (169.254.170.2/32) or host:PORT[/tcp|/udp] (host:3128)"
    for raw in entries:
        entry = raw.strip()
        if entry.startswith("host:"):
            m = re.fullmatch(r"host:(\d{1,5})(?:/(tcp|udp))?", entry)
            if m is None or not 1 <= int(m[1]) <= 65535:
                raise InvalidArgument(f"invalid network allow entry {entry!r}", hint=hint)
            ports.append(f"{int(m[1])}/{m[2] or 'tcp'}")
        else:
            try:
                cidrs.append(str(ipaddress.IPv4Network(entry, strict=False)))
            except ValueError:
                raise InvalidArgument(f"invalid network allow entry {entry!r}", hint=hint) from None
    return cidrs, ports


def _bridge_for(home: Home) -> tuple[str, str]:
    """The bridge and subnet of a FLEX_HOME. The system install gets flex0 and 10.90.0.0/16; any other
    FLEX_HOME (a test, a second install) gets its own bridge and /24, because the ruleset is rendered from
    one database and must never be shared with containers another database knows nothing about."""
    if home.root == Path("/var/lib/flex"):
        return DEFAULT_BRIDGE, DEFAULT_SUBNET
    h = name_digest(str(home.root))
    return f"flex{h.hex()[:8]}", f"10.{91 + h[0] % 32}.{h[1]}.0/24"


def _helper_pids(prefix: str) -> Iterator[int]:
    """Forwarder processes of this FLEX_HOME (any container), found by their tag argument."""
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if uid != 0 and entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if prefix.encode() in f.read():
                    yield int(entry.name)
        except OSError:
            continue
