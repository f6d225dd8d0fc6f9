"""The few rtnetlink requests a container's network needs, on a socket that belongs to one network namespace.

Why not pyroute2: importing it costs 70-190 ms, more than the whole network set-up of a container, and it
would have to be imported in every `flex runtime run`. These are a dozen fixed requests (links, addresses,
the default route) and three dumps (links, routes); each request is acknowledged, and an error comes back
as an OSError naming the request. Used by the rootless outer namespace and by the root runner's bridge.
A netlink socket acts in the namespace it was created in, whatever namespace its user later moves to.
Imports nothing from flex.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

__all__ = ["Rtnl"]

_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_NEWROUTE, _RTM_GETROUTE = 16, 17, 18, 20, 24, 26
_F_REQUEST, _F_ACK, _F_EXCL, _F_CREATE, _F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
_IFLA_OPERSTATE, _IF_OPER_UP = 16, 6
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 1, 4, 5, 15
_IFF_UP = 0x1
_NLA_F_NESTED = 0x8000


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("HH", length, kind) + data + b"\0" * (-length % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, b"".join(attrs))


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0, _IFF_UP if up else 0)


def _mac(address: str) -> bytes:
    return bytes(int(b, 16) for b in address.split(":"))


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


class Rtnl:
    """An rtnetlink socket in the current network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, what: str, kind: int, flags: int, body: bytes) -> bytes:
        self.seq += 1
        self.sock.send(struct.pack("IHHII", 16 + len(body), kind, _F_REQUEST | _F_ACK | flags, self.seq, 0) + body)
        payload = b""
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("IHHII", data, offset)
                if seq == self.seq:
                    if mtype == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("i", data, offset + 16)
                        if code:
                            raise OSError(-code, f"{what}: {os.strerror(-code)}")
                        return payload
                    payload = data[offset + 16:offset + length]
                offset += (length + 3) & ~3 if length else len(data)

    def _dump(self, what: str, kind: int, body: bytes) -> list[bytes]:
        """Every message of a dump request (header stripped), until NLMSG_DONE."""
        self.seq += 1
        self.sock.send(struct.pack("IHHII", 16 + len(body), kind, _F_REQUEST | _F_DUMP, self.seq, 0) + body)
        out: list[bytes] = []
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("IHHII", data, offset)
                if seq == self.seq:
                    if mtype == _NLMSG_DONE:
                        return out
                    if mtype == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("i", data, offset + 16)
                        raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    out.append(data[offset + 16:offset + length])
                offset += (length + 3) & ~3 if length else len(data)

    def add_bridge(self, name: str, mtu: int | None = None, *, up: bool = True, address: str | None = None) -> None:
        attrs = _attr(_IFLA_IFNAME, _name(name))
        if mtu is not None:
            attrs += _attr(_IFLA_MTU, struct.pack("I", mtu))
        if address is not None:
            attrs += _attr(_IFLA_ADDRESS, _mac(address))
        self._request(f"creating bridge {name}", _RTM_NEWLINK, _F_CREATE | _F_EXCL, _ifinfo(up=up)
                      + attrs + _nested(_IFLA_LINKINFO, _attr(_IFLA_INFO_KIND, b"bridge")))

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int | None, master: int | None, *,
                 up: bool = True, peer_address: str | None = None) -> None:
        """A veth pair: ``name`` here (up and on bridge ``master`` unless told otherwise), ``peer`` in the
        namespace of the fd (with the MAC ``peer_address`` when given)."""
        mtu_attr = _attr(_IFLA_MTU, struct.pack("I", mtu)) if mtu is not None else b""
        peer_info = (_ifinfo() + _attr(_IFLA_IFNAME, _name(peer)) + mtu_attr
                     + _attr(_IFLA_NET_NS_FD, struct.pack("I", peer_netns_fd))
                     + (_attr(_IFLA_ADDRESS, _mac(peer_address)) if peer_address is not None else b""))
        self._request(f"creating veth {name}", _RTM_NEWLINK, _F_CREATE | _F_EXCL, _ifinfo(up=up)
                      + _attr(_IFLA_IFNAME, _name(name)) + mtu_attr
                      + (_attr(_IFLA_MASTER, struct.pack("I", master)) if master is not None else b"")
                      + _nested(_IFLA_LINKINFO, _attr(_IFLA_INFO_KIND, b"veth"),
                                _nested(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))))

    def set_link(self, name: str, *, up: bool, mtu: int | None = None, master: int | None = None,
                 address: str | None = None) -> None:
        attrs = _attr(_IFLA_IFNAME, _name(name))
        if mtu is not None:
            attrs += _attr(_IFLA_MTU, struct.pack("I", mtu))
        if master is not None:
            attrs += _attr(_IFLA_MASTER, struct.pack("I", master))
        if address is not None:
            attrs += _attr(_IFLA_ADDRESS, _mac(address))
        self._request(f"configuring {name}", _RTM_NEWLINK, 0, _ifinfo(up=up) + attrs)

    def delete_link(self, name: str) -> None:
        self._request(f"deleting {name}", _RTM_DELLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))

    def links(self) -> list[tuple[int, str, int | None]]:
        """(index, name, index of its master or None) of every link."""
        out: list[tuple[int, str, int | None]] = []
        for msg in self._dump("listing links", _RTM_GETLINK, _ifinfo()):
            index: int = struct.unpack_from("i", msg, 4)[0]
            attrs = _attrs(msg, 16)
            name = attrs.get(_IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
            master = struct.unpack("I", attrs[_IFLA_MASTER][:4])[0] if _IFLA_MASTER in attrs else None
            out.append((index, name, master))
        return out

    def routes(self) -> list[tuple[str, int, int | None]]:
        """(destination, prefix length, output link index) of every IPv4 route of the main table."""
        out: list[tuple[str, int, int | None]] = []
        body = struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        for msg in self._dump("listing routes", _RTM_GETROUTE, body):
            family, dst_len, _, _, table = struct.unpack_from("BBBBB", msg, 0)
            attrs = _attrs(msg, 12)
            if _RTA_TABLE in attrs:
                table = struct.unpack("I", attrs[_RTA_TABLE][:4])[0]
            if family != socket.AF_INET or table != 254:
                continue
            dst = socket.inet_ntoa(attrs[_RTA_DST][:4]) if _RTA_DST in attrs else "0.0.0.0"
            oif = struct.unpack("i", attrs[_RTA_OIF][:4])[0] if _RTA_OIF in attrs else None
            out.append((dst, dst_len, oif))
        return out

    def index(self, name: str) -> int:
        reply = self._request(f"looking up {name}", _RTM_GETLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))
        if len(reply) < 16:
            raise OSError(errno.ENODEV, f"looking up {name}: no such device")
        index: int = struct.unpack_from("i", reply, 4)[0]
        return index

    def is_up(self, name: str) -> bool:
        """Whether the kernel has finished bringing ``name`` up (operstate UP). Carrier changes are applied
        by the kernel's linkwatch work, which waits for the rtnl lock: until then the device drops what it
        is given to send, and a bridge does not forward to it."""
        reply = self._request(f"looking up {name}", _RTM_GETLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))
        offset = 16
        while offset + 4 <= len(reply):
            length, kind = struct.unpack_from("HH", reply, offset)
            if length < 4:
                break
            if kind == _IFLA_OPERSTATE:
                return bool(reply[offset + 4] == _IF_OPER_UP)
            offset += (length + 3) & ~3
        return False

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        raw = socket.inet_aton(address)
        self._request(f"adding {address}/{prefixlen}", _RTM_NEWADDR, _F_CREATE | _F_EXCL,
                      struct.pack("BBBBI", socket.AF_INET, prefixlen, 0, 0, index)
                      + _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw))

    def add_default_route(self, index: int, gateway: str) -> None:
        # main table, protocol boot, scope universe, unicast
        self._request(f"adding the default route via {gateway}", _RTM_NEWROUTE, _F_CREATE | _F_EXCL,
                      struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
                      + _attr(_RTA_GATEWAY, socket.inet_aton(gateway)) + _attr(_RTA_OIF, struct.pack("i", index)))
