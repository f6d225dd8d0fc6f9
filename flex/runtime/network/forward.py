"""Published ports by a small userspace forwarder process per container (root: TCP and UDP; rootless: UDP).

Owns binding the host side of ``-p`` (in the caller, so a busy port or a bad address is an error the user
sees at once, and port 0 gets a real free port from the kernel with no race) and the forwarder process
that inherits those listening sockets and relays TCP (splice(2), zero-copy) and UDP (per-client sessions)
to the container's address.

Rootless, the container's address is not reachable from the runner's network at all, so the forwarder
forks a helper that joins the container's user and network namespaces (setns needs a single-threaded
process for a user namespace, hence the fork before any thread starts). A socket belongs to the network
namespace it was created in: the helper creates each per-client socket there and hands the fd back over a
socketpair (SCM_RIGHTS); the forwarder, still in the runner's namespaces, relays between its host socket
and that one, which talks to 127.0.0.1:PORT inside the container. The helper holds nothing but its end of
the socketpair, so a container that reached it could gain nothing of the runner's. It exits when the
forwarder dies (EOF on the socketpair), so a kill -9 of the forwarder leaves no helper behind.

Why not nftables DNAT: traffic to 127.0.0.1 never leaves the loopback device, so DNAT of it to a
container needs ``route_localnet=1`` on the bridge, which lets packets with loopback addresses onto a
real network (the kube-proxy hole, CVE-2020-8558); a DNAT'ed port is also not *held*, so a host service
could bind the same port later and silently lose its loopback traffic. A bound socket avoids both, works
the same rootless (slirp4netns forwards in userspace too) and costs one small process per container.

This file is also the forwarder's program: it is run as ``python -I -S net_forward.py ...`` and imports
only cheap standard modules at module top (no subprocess, dataclasses or ctypes there: each costs
milliseconds of start-up, and a rootless start with a UDP port waits for the forwarder's helper).
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["Listener", "bind_listener", "early_failure", "main", "spawn_forwarder"]

_CHUNK = 1 << 20
_UDP_IDLE = 120.0


class Listener:
    """A bound host socket and where its traffic goes. (A plain class: importing dataclasses would cost the
    forwarder's start-up ~5 ms.)"""

    def __init__(self, sock: socket.socket, protocol: str, target_ip: str, target_port: int) -> None:
        self.sock = sock
        self.protocol = protocol        # "tcp" | "udp"
        self.target_ip = target_ip
        self.target_port = target_port

    @property
    def host_port(self) -> int:
        return int(self.sock.getsockname()[1])


def bind_listener(host_ip: str, host_port: int, protocol: str, target_ip: str, target_port: int) -> Listener:
    """Bind ``host_ip:host_port`` (0 = the kernel picks a free port). Raises OSError as bind(2) does."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, host_port))
        if protocol == "tcp":
            sock.listen(256)
    except BaseException:
        sock.close()
        raise
    return Listener(sock, protocol, target_ip, target_port)


def spawn_forwarder(tag: str, listeners: Sequence[Listener], log_path: str,
                    netns_fds: tuple[int, int] | None = None) -> tuple[int, int | None]:
    """Start the forwarder in its own session (it outlives the CLI of ``run -d``); returns its pid and,
    with ``netns_fds`` (open /proc/PID/ns/user and ns/net of the container), a pipe for ``early_failure``.
    ``tag`` is one argument of its command line, by which cleanup finds it again (even after a crash).
    The listening sockets are inherited, so connections queue in their backlog until it is ready."""
    # Arguments, not JSON: importing json would cost the forwarder's start-up ~4 ms. The IP goes last, as
    # an IPv6 address holds colons.
    args = ["--tag", tag]
    args += [f"{ls.sock.fileno()}:{ls.protocol}:{ls.target_port}:{ls.target_ip}" for ls in listeners]
    fds = [ls.sock.fileno() for ls in listeners]
    rfd = wfd = -1
    if netns_fds is not None:
        rfd, wfd = os.pipe()
        args[2:2] = ["--netns", f"{netns_fds[0]},{netns_fds[1]},{wfd}"]
        fds += [*netns_fds, wfd]
    import subprocess  # not at module top: the forwarder itself never needs it

    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=fds, start_new_session=True,
                close_fds=True)
    except BaseException:
        if rfd >= 0:
            os.close(rfd)
        raise
    finally:
        if wfd >= 0:
            os.close(wfd)
    return proc.pid, (rfd if rfd >= 0 else None)


def early_failure(rfd: int) -> str | None:
    """Without waiting: why a namespaced forwarder's helper has already failed, or None (ready, or still
    starting). Closes rfd. Nobody waits for the helper: the container's start does not need it (datagrams
    queue in the bound host socket meanwhile), and slirp4netns, which is up by now, has joined the same
    namespaces as the same user, so the helper's join fails only where slirp4netns's would have too."""
    try:
        if not select.select([rfd], [], [], 0)[0]:
            return None
        msg = os.read(rfd, 4096)
        return None if msg == b"1" else (msg.decode(errors="replace") or "it exited")
    finally:
        os.close(rfd)


# ----- the forwarder process -------------------------------------------------------------------------

def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until EOF, then half-close dst. splice() through a pipe avoids copying to Python."""
    try:
        rp, wp = os.pipe()
        try:
            while True:
                n = os.splice(src.fileno(), wp, _CHUNK)
                if n == 0:
                    break
                while n:
                    n -= os.splice(rp, dst.fileno(), n)
        finally:
            os.close(rp)
            os.close(wp)
    except OSError:
        pass
    finally:
        try:  # noqa: SIM105 - contextlib would cost the forwarder's start-up ~2.5 ms
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already


# ----- the helper in the container's namespaces (rootless) -------------------------------------------

def _setns(fd: int, nstype: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, nstype)
        return
    import ctypes  # only the namespaced helper pays for it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ns_helper(chan: socket.socket, userns: int, netns: int) -> None:
    """Runs in the forked child: join the container's namespaces, then make UDP sockets on request."""
    try:
        _setns(userns, 0x10000000)   # CLONE_NEWUSER first: it grants the rights to join the netns
        _setns(netns, 0x40000000)    # CLONE_NEWNET
    except OSError as err:
        chan.send(f"cannot join the container's namespaces: {err}".encode())
        os._exit(1)
    os.close(userns)
    os.close(netns)
    chan.send(b"1")
    while True:
        req = chan.recv(16)
        if not req:  # the forwarder is gone
            os._exit(0)
        try:
            s = socket.socket(socket.AF_INET6 if req == b"6" else socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as err:
            chan.send(f"E{err}".encode())
            continue
        socket.send_fds(chan, [b"s"], [s.fileno()])
        s.close()


class _NsSockets:
    """The forwarder's side of the helper: a UDP socket from the container's network namespace."""

    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        self.lock = threading.Lock()

    def __call__(self, family: int) -> socket.socket:
        with self.lock:
            self.chan.send(b"6" if family == socket.AF_INET6 else b"4")
            msg, fds, _, _ = socket.recv_fds(self.chan, 4096, 1)
        if not fds:
            raise OSError(f"the namespace helper made no socket: {msg.decode(errors='replace') or 'it exited'}")
        return socket.socket(fileno=fds[0])


def _start_ns_helper(userns: int, netns: int, ready: int, inherited: list[int]) -> _NsSockets:
    """Fork the helper (before any thread exists) and report to the caller on the ready pipe."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        ours.close()
        for fd in [*inherited, ready]:
            os.close(fd)  # the helper keeps nothing of the host side
        _ns_helper(theirs, userns, netns)
        os._exit(0)
    theirs.close()
    os.close(userns)
    os.close(netns)
    answer = ours.recv(4096)
    try:  # noqa: SIM105 - no contextlib in the forwarder (start-up time)
        os.write(ready, answer or b"the namespace helper exited")
    except OSError:
        pass  # attach did not stay to read it (it never waits): the log below still says why
    os.close(ready)
    if answer != b"1":
        print(answer.decode(errors="replace"), file=sys.stderr)
        sys.exit(1)
    return _NsSockets(ours)


def _plain_udp_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _serve_tcp_conn(client: socket.socket, ip: str, port: int) -> None:
    try:
        upstream = socket.create_connection((ip, port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve_tcp(listener: socket.socket, ip: str, port: int) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            time.sleep(0.05)
            continue
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_tcp_conn, args=(client, ip, port), daemon=True).start()


def _serve_udp(listener: socket.socket, ip: str, port: int,
               make_socket: Callable[[int], socket.socket] = _plain_udp_socket) -> None:
    """One connected upstream socket per client address, dropped after _UDP_IDLE seconds of silence.
    ``make_socket`` makes the upstream sockets (rootless: in the container's network namespace)."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    sessions: dict[object, tuple[socket.socket, float]] = {}
    while True:
        for key, _ in sel.select(timeout=10):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if key.data is None:
                    data, client = sock.recvfrom(65535)
                    entry = sessions.get(client)
                    if entry is None:
                        up = make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                        up.connect((ip, port))
                        sel.register(up, selectors.EVENT_READ, client)
                        entry = (up, 0.0)
                    sessions[client] = (entry[0], time.monotonic())
                    entry[0].send(data)
                else:
                    data = sock.recv(65535)
                    listener.sendto(data, key.data)
                    sessions[key.data] = (sock, time.monotonic())
            except OSError:
                continue
        now = time.monotonic()
        for client, (up, seen) in list(sessions.items()):
            if now - seen > _UDP_IDLE:
                sel.unregister(up)
                up.close()
                del sessions[client]


def main(argv: Sequence[str]) -> int:
    """``--tag TAG [--netns USERFD,NETFD,READYFD] FD:PROTO:PORT:IP...`` (see spawn_forwarder)."""
    if len(argv) < 3 or argv[0] != "--tag":
        print("usage: net_forward.py --tag TAG [--netns USERFD,NETFD,READYFD] FD:PROTO:PORT:IP...", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    rest = list(argv[2:])
    netns = None
    if rest[0] == "--netns":
        netns = [int(x) for x in rest[1].split(",")]
        rest = rest[2:]
    entries = []
    for arg in rest:
        fd, protocol, port, ip = arg.split(":", 3)
        entries.append({"fd": fd, "protocol": protocol, "port": port, "ip": ip})
    make_socket: Callable[[int], socket.socket] = _plain_udp_socket
    if netns is not None:
        if any(e["protocol"] != "udp" for e in entries):
            print("a namespaced forwarder relays UDP only", file=sys.stderr)
            return 2
        make_socket = _start_ns_helper(netns[0], netns[1], netns[2], [int(e["fd"]) for e in entries])
    threads = []
    for entry in entries:
        sock = socket.socket(fileno=int(entry["fd"]))
        if entry["protocol"] == "tcp":
            args: tuple[object, ...] = (sock, entry["ip"], int(entry["port"]))
            threads.append(threading.Thread(target=_serve_tcp, args=args, daemon=True))
        else:
            args = (sock, entry["ip"], int(entry["port"]), make_socket)
            threads.append(threading.Thread(target=_serve_udp, args=args, daemon=True))
    for t in threads:
        t.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
