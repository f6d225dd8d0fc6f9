"""`ssh -R`: a listening socket inside the environment's network namespace, each connection to it carried back
to the client as a forwarded-tcpip channel. Nothing listens on the runner's machine: a short helper enters the
namespace (as flex/runner/access/ports.py's does), binds and listens, hands the listening socket back over a
unix socket (SCM_RIGHTS) and exits; the socket stays in the container's namespace and the runner accepts on it.

As OpenSSH's sshd with GatewayPorts no: an empty or `localhost` address listens on the environment's loopback;
`*` or `0.0.0.0` on all of its addresses (the environment's own network, not the runner's machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import asyncssh

from flex.runner.access.ports import socket_from_container
from flex.runner.access.ssh.forward import SocketBridge

__all__ = ["RemoteListener", "listen_in_container", "remote_listen"]

_HELPER = """
import socket, sys
back = socket.socket(fileno=int(sys.argv[1]))
host, port = sys.argv[2], int(sys.argv[3])
try:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
except OSError as e:
    back.sendall(str(e.strerror or e).encode())
    sys.exit(1)
socket.send_fds(back, [b"ok"], [s.fileno()])
"""


def _bind_address(host: str) -> str:
    h = host.strip("[]").lower()
    if h in ("", "localhost", "127.0.0.1"):
        return "127.0.0.1"
    if h in ("*", "0.0.0.0"):
        return "0.0.0.0"
    if h in ("::1", "ip6-localhost"):
        return "::1"
    raise OSError(f"{host}: only the environment's loopback, or * for all its addresses")


def listen_in_container(pid: int, host: str, port: int, rootless: bool) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` in the network namespace of process ``pid``."""
    return socket_from_container(pid, rootless, _HELPER, _bind_address(host), str(port))


class RemoteListener(asyncssh.SSHListener):
    def __init__(self, server: asyncio.AbstractServer, port: int) -> None:
        super().__init__()
        self.server, self.port = server, port

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.server.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self.server.wait_closed()


async def remote_listen(conn: asyncssh.SSHServerConnection, pid: int, rootless: bool, host: str,
                        port: int) -> RemoteListener | bool:
    """Serve ``ssh -R host:port:...``; False (the client hears "remote port forwarding failed") if it cannot."""
    try:
        sock = await asyncio.to_thread(listen_in_container, pid, host, port, rootless)
    except OSError:
        return False
    bound = sock.getsockname()[1]

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            await conn.create_connection(lambda: SocketBridge(reader, writer), host, bound, str(peer[0]),
                                         int(peer[1]))
        except (asyncssh.Error, OSError):
            writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    return RemoteListener(server, bound)
