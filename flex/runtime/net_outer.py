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
The child uses only syscalls and posix_spawn (no locks a parent thread could hold). Imports nothing from
flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flex.errors import FailedPrecondition, NotFound, Unavailable

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


def open_outer(pid: int, guest_cidr: str, gateway: str, guard: str, *, ip_tool: str, nft_tool: str,
               nsenter_tool: str, timeout: float = 10.0) -> OuterNetns:
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
        n1_script = (f"link add {BRIDGE} mtu {MTU} type bridge\n"
                     f"link set {TAP} master {BRIDGE} mtu {MTU} up\n"
                     f"link add {VETH} mtu {MTU} type veth peer name eth0 mtu {MTU} netns /proc/self/fd/{net_fd}\n"
                     f"link set {VETH} master {BRIDGE} up\n"
                     f"link set {BRIDGE} up\n")
        n2_script = (f"addr add {guest_cidr} dev eth0\nlink set eth0 up\nlink set lo up\n"
                     f"route add default via {gateway} dev eth0\n")
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            ours.close()
            _child_main(theirs, parent_fd, net_fd, (ip_tool, nft_tool, nsenter_tool), guard, n1_script, n2_script)
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


def _child_main(sock: socket.socket, parent_userns: int, container_net: int, tools: tuple[str, str, str],
                guard: str, n1_script: str, n2_script: str) -> None:  # pragma: no cover - forked child
    code = 1
    ip_tool, nft_tool, nsenter_tool = tools
    try:
        _check(_libc.setns(parent_userns, _CLONE_NEWUSER), "entering the runner's user namespace")
        _check(_libc.unshare(_CLONE_NEWNET), "creating the outer network namespace")
        # No IPv6 in the outer namespace: its bridge gets no link-local address the container could reach.
        for name in ("all", "default"):
            with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                f.write("1")
        _make_tap(TAP)
        sock.send(b"ok")
        # The container's namespace by its fd, for `ip ... netns` and nsenter: never by a pid.
        os.set_inheritable(container_net, True)
        nft = _spawn([nft_tool, "-f", "-"], guard)
        _finish("ip (outer namespace)", _spawn([ip_tool, "-batch", "-"], n1_script))
        _finish("nft (guard)", nft)
        # Through nsenter, not setns here: this process must stay in the outer namespace, which it holds
        # (and slirp4netns joins through its pid) until slirp4netns is up.
        _finish("ip (container namespace)", _spawn([nsenter_tool, f"--net=/proc/self/fd/{container_net}", "--",
                                                    ip_tool, "-batch", "-"], n2_script))
        sock.send(b"ok")
        code = 0
        sock.recv(1)  # stay in the namespaces until slirp4netns has joined them (the parent closes)
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
