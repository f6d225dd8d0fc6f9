"""Published ports of a root runner: a small userspace forwarder process per container.

Owns binding the host side of ``-p`` (in the caller, so a busy port or a bad address is an error the user
sees at once, and port 0 gets a real free port from the kernel with no race) and the forwarder process
that inherits those listening sockets and relays TCP (splice(2), zero-copy) and UDP (per-client sessions)
to the container's address.

Why not nftables DNAT: traffic to 127.0.0.1 never leaves the loopback device, so DNAT of it to a
container needs ``route_localnet=1`` on the bridge, which lets packets with loopback addresses onto a
real network (the kube-proxy hole, CVE-2020-8558); a DNAT'ed port is also not *held*, so a host service
could bind the same port later and silently lose its loopback traffic. A bound socket avoids both, works
the same rootless (slirp4netns forwards in userspace too) and costs one small process per container.

This file is also the forwarder's program: it is run as ``python -I net_forward.py ...`` and imports only
the standard library at module top, so the process starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Listener", "bind_listener", "main", "spawn_forwarder"]

_CHUNK = 1 << 20
_UDP_IDLE = 120.0


@dataclass
class Listener:
    """A bound host socket and where its traffic goes."""

    sock: socket.socket
    protocol: str          # "tcp" | "udp"
    target_ip: str
    target_port: int

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


def spawn_forwarder(tag: str, listeners: Sequence[Listener], log_path: str) -> int:
    """Start the forwarder in its own session (it outlives the CLI of ``run -d``); returns its pid.
    ``tag`` is one argument of its command line, by which cleanup finds it again (even after a crash).
    The listening sockets are inherited, so connections queue in their backlog until it is ready."""
    spec = [{"fd": ls.sock.fileno(), "protocol": ls.protocol, "ip": ls.target_ip, "port": ls.target_port}
            for ls in listeners]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--tag", tag, json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=[ls.sock.fileno() for ls in listeners],
            start_new_session=True, close_fds=True)
    return proc.pid


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
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


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


def _serve_udp(listener: socket.socket, ip: str, port: int) -> None:
    """One connected upstream socket per client address, dropped after _UDP_IDLE seconds of silence."""
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
                        up = socket.socket(listener.family if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
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
    if len(argv) != 3 or argv[0] != "--tag":
        print("usage: net_forward.py --tag TAG SPEC_JSON", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threads = []
    for entry in json.loads(argv[2]):
        sock = socket.socket(fileno=int(entry["fd"]))
        target = _serve_tcp if entry["protocol"] == "tcp" else _serve_udp
        threads.append(threading.Thread(target=target, args=(sock, entry["ip"], int(entry["port"])), daemon=True))
    for t in threads:
        t.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
