"""The few rtnetlink requests a rootless start needs, on a socket that belongs to one network namespace.

Why not pyroute2 (which the root runner uses): importing it costs 70-190 ms, more than the whole network
set-up of a rootless container, and it would have to be imported in every `flex runtime run`. These are
seven fixed requests; each is acknowledged, and an error comes back as an OSError naming the request.
A netlink socket acts in the namespace it was created in, whatever namespace its user later moves to.
Imports nothing from flex.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

__all__ = ["Rtnl"]

_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 18, 20, 24
_F_REQUEST, _F_ACK, _F_EXCL, _F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 4, 10, 18, 28
_IFLA_OPERSTATE, _IF_OPER_UP = 16, 6
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY = 4, 5
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

    def add_bridge(self, name: str, mtu: int) -> None:
        self._request(f"creating bridge {name}", _RTM_NEWLINK, _F_CREATE | _F_EXCL, _ifinfo(up=True)
                      + _attr(_IFLA_IFNAME, _name(name)) + _attr(_IFLA_MTU, struct.pack("I", mtu))
                      + _nested(_IFLA_LINKINFO, _attr(_IFLA_INFO_KIND, b"bridge")))

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int, master: int) -> None:
        """A veth pair: ``name`` here (up, on bridge ``master``), ``peer`` in the namespace of the fd."""
        peer_info = (_ifinfo() + _attr(_IFLA_IFNAME, _name(peer)) + _attr(_IFLA_MTU, struct.pack("I", mtu))
                     + _attr(_IFLA_NET_NS_FD, struct.pack("I", peer_netns_fd)))
        self._request(f"creating veth {name}", _RTM_NEWLINK, _F_CREATE | _F_EXCL, _ifinfo(up=True)
                      + _attr(_IFLA_IFNAME, _name(name)) + _attr(_IFLA_MTU, struct.pack("I", mtu))
                      + _attr(_IFLA_MASTER, struct.pack("I", master))
                      + _nested(_IFLA_LINKINFO, _attr(_IFLA_INFO_KIND, b"veth"),
                                _nested(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))))

    def set_link(self, name: str, *, up: bool, mtu: int | None = None, master: int | None = None) -> None:
        attrs = _attr(_IFLA_IFNAME, _name(name))
        if mtu is not None:
            attrs += _attr(_IFLA_MTU, struct.pack("I", mtu))
        if master is not None:
            attrs += _attr(_IFLA_MASTER, struct.pack("I", master))
        self._request(f"configuring {name}", _RTM_NEWLINK, 0, _ifinfo(up=up) + attrs)

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
