"""Rootless: the outer network namespace between a container and slirp4netns, where the guard lives.

A rootless container runs in its own user namespace, a child of the runner's (the keeper's, or in tests
any namespace the runner user owns). Its root holds CAP_NET_ADMIN in its own network namespace, so a
filter put there can be deleted by the container (e.g. dockerd, or `nft flush ruleset`). So flex builds a
second, outer namespace owned by the *parent* user namespace, where the container has no capability:

    container netns (eth0 10.0.2.100/24, via 10.0.2.2)  --veth-->  outer netns: bridge flexbr0
                                                                    + tap0 of slirp4netns
                                                                    + guard (nft bridge table)

slirp4netns attaches to tap0 in the outer namespace, so every packet the container sends crosses the
bridge, where the guard drops what it must not reach (the runner's own addresses, 169.254.0.0/16). The
container keeps slirp4netns's usual addresses, so hostfwd and DNS (10.0.2.3) work unchanged.

Nothing is left to clean up: the outer namespace is held only by processes and file descriptors (the
set-up child's, then slirp4netns's tap), so it vanishes with slirp4netns, or with us if we die first.

The set-up runs in a forked child because entering a user namespace needs a single-threaded process.
The child uses only syscalls, rtnetlink (net_rtnl.py) and posix_spawn for `nft` (no locks a parent thread
could hold). Imports nothing from flex but flex.errors and net_rtnl.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flex.errors import FailedPrecondition, NotFound, Unavailable
from flex.runtime.network.rtnl import Rtnl

__all__ = ["BRIDGE", "TAP", "OuterNetns", "guard_script", "open_outer"]

BRIDGE = "flexbr0"
TAP = "tap0"
VETH = "flexveth0"
MTU = 65520  # as slirp4netns's --mtu: its fastest setting

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_NS_GET_PARENT = 0xB702      # _IO(0xb7, 0x2)
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@dataclass
class OuterNetns:
    """The set-up child, which sits in the outer namespace until ``close()``: slirp4netns joins the
    namespaces of ``pid`` (its pid mode is the one that keeps slirp4netns's sandbox working)."""
    pid: int
    _sock: socket.socket

    def wait(self, timeout: float = 10.0) -> None:
        """Wait until the child has finished the bridge, veth, guard and the container's side."""
        _reply(self._sock, timeout, "configuring the container's network")

    def wait_links_up(self, timeout: float = 10.0) -> None:
        """Once slirp4netns is attached: wait until every link on the path is up in the kernel's view."""
        self._sock.send(b"go")
        _reply(self._sock, timeout, "waiting for the container's links to come up")

    def close(self) -> None:
        """Let the child exit (slirp4netns's tap holds the outer namespace from then on) and reap it."""
        self._sock.close()
        if self.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0


def guard_script(blocked: list[str], allow: list[str]) -> str:
    """nftables for the outer namespace: what crosses the bridge towards slirp4netns is dropped when it
    goes to ``blocked`` (the bridge family cannot reject on this kernel, so a probe sees a timeout)."""
    allowed = f"    ip daddr {{ {', '.join(allow)} }} accept\n" if allow else ""
    return ("table bridge flexguard {\n  chain forward {\n    type filter hook forward priority filter;"
            f" policy accept;\n{allowed}    ip daddr {{ {', '.join(blocked)} }} counter drop\n"
            "    ether type ip6 drop\n  }\n}\n")


def open_outer(pid: int, guest_cidr: str, gateway: str, guard: str, *, nft_tool: str,
               timeout: float = 10.0) -> OuterNetns:
    """Build the outer namespace for the container whose init is ``pid`` (created, not yet started).
    Returns once tap0 exists (slirp4netns may attach); ``wait()`` for the rest, ``close()`` at the end."""
    user_fd = net_fd = parent_fd = -1
    try:
        try:
            user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise NotFound(f"cannot open the namespaces of pid {pid}: {err.strerror}") from err
        try:
            parent_fd = fcntl.ioctl(user_fd, _NS_GET_PARENT)
        except OSError:
            parent_fd = -1
        if parent_fd < 0 or os.fstat(parent_fd).st_ino == os.stat("/proc/self/ns/user").st_ino:
            raise FailedPrecondition(f"pid {pid} is not in a user namespace of its own inside the runner's; "
                                     "its network cannot be guarded",
                                     hint="rootless containers get one from flex's spec (with_rootless)")
        os.set_inheritable(parent_fd, False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        address, prefixlen = guest_cidr.split("/")
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            ours.close()
            _child_main(theirs, parent_fd, net_fd, nft_tool, guard, (address, int(prefixlen), gateway))
        theirs.close()
        outer = OuterNetns(pid=child, _sock=ours)
        try:
            _reply(ours, timeout, "creating the outer network namespace")
        except BaseException:
            outer.close()
            raise
        return outer
    finally:
        for fd in (user_fd, net_fd, parent_fd):
            if fd >= 0:
                os.close(fd)


def _reply(sock: socket.socket, timeout: float, what: str) -> None:
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise Unavailable(f"timed out {what}")
    text = sock.recv(4096).decode(errors="replace")
    if text != "ok":
        raise FailedPrecondition(f"{what} failed: {text.removeprefix('error: ') or 'the helper died'}")


def _child_main(sock: socket.socket, parent_userns: int, container_net: int, nft_tool: str, guard: str,
                guest: tuple[str, int, str]) -> None:  # pragma: no cover - forked child
    code = 1
    try:
        _check(_libc.setns(parent_userns, _CLONE_NEWUSER), "entering the runner's user namespace")
        _check(_libc.unshare(_CLONE_NEWNET), "creating the outer network namespace")
        outer_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        # A netlink socket for the container's side, made there now: it keeps acting there, while this
        # process stays in the outer namespace, which it holds (slirp4netns joins it through our pid).
        _check(_libc.setns(container_net, _CLONE_NEWNET), "entering the container's network namespace")
        inner = Rtnl()
        _check(_libc.setns(outer_fd, _CLONE_NEWNET), "returning to the outer network namespace")
        os.close(outer_fd)
        # No IPv6 in the outer namespace: its bridge gets no link-local address the container could reach.
        for name in ("all", "default"):
            with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                f.write("1")
        _make_tap(TAP)
        sock.send(b"ok")
        nft = _spawn([nft_tool, "-f", "-"], guard)  # the slow part (~4 ms): it runs while we build links
        rtnl = Rtnl()
        rtnl.add_bridge(BRIDGE, MTU)
        bridge = rtnl.index(BRIDGE)
        rtnl.set_link(TAP, up=True, mtu=MTU, master=bridge)
        rtnl.add_veth(VETH, "eth0", container_net, MTU, bridge)
        address, prefixlen, gateway = guest
        eth0 = inner.index("eth0")
        inner.add_address(eth0, address, prefixlen)
        inner.set_link("eth0", up=True)
        inner.set_link("lo", up=True)
        inner.add_default_route(eth0, gateway)
        _finish("nft (guard)", nft)
        sock.send(b"ok")
        # Stay in the namespaces until slirp4netns has joined them. Then make sure the kernel has brought
        # every link up (Rtnl.is_up). Measured: without this, after another container's start, one first
        # connection in three lost its first packet (a SYN retried after 6 s): the links had not come up
        # yet. Asking for their state settled it at once, every time (22 runs), so this costs ~0.1 ms.
        if sock.recv(16) == b"go":
            deadline = time.monotonic() + 10
            while not (rtnl.is_up(TAP) and rtnl.is_up(VETH) and inner.is_up("eth0")):
                if time.monotonic() > deadline:
                    raise OSError("the container's links did not come up within 10 s")
                time.sleep(0.001)
            sock.send(b"ok")
            sock.recv(1)
        code = 0
    except BaseException as err:  # everything goes back to the parent as one line
        with contextlib.suppress(OSError):
            sock.send(f"error: {err}".encode()[:4000])
    finally:
        os._exit(code)


def _make_tap(name: str) -> None:
    """A persistent tap device: slirp4netns then attaches to it by name, already on the bridge."""
    with _opened_rw("/dev/net/tun") as fd:
        ifr = struct.pack("16sH22x", name.encode(), _IFF_TAP | _IFF_NO_PI)
        fcntl.ioctl(fd, _TUNSETIFF, ifr)
        fcntl.ioctl(fd, _TUNSETPERSIST, 1)


@contextlib.contextmanager
def _opened_rw(path: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise OSError(err.errno, f"cannot open {path}: {err.strerror} (installer/host-setup.sh makes it 0666)"
                      ) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _spawn(argv: list[str], stdin_text: str) -> Callable[[], tuple[int, str]]:
    """posix_spawn ``argv`` with ``stdin_text`` on stdin; returns a function that waits for it."""
    in_r, in_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                             file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, err_w, 2),
                                           (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    finally:
        os.close(in_r)
        os.close(err_w)
    with contextlib.suppress(BrokenPipeError):
        os.write(in_w, stdin_text.encode())  # scripts are small: they fit the pipe's buffer
    os.close(in_w)

    def wait() -> tuple[int, str]:
        chunks = []
        while chunk := os.read(err_r, 65536):
            chunks.append(chunk)
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")

    return wait


def _finish(what: str, wait: Callable[[], tuple[int, str]]) -> None:
    code, err = wait()
    if code != 0:
        raise OSError(f"{what} exited {code}: {(err.strip().splitlines() or ['(no message)'])[0]}")
