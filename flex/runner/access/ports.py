"""Serving a TCP stream: a connection to a port of the environment, as its own processes see it (issue 15).

The connection is made *inside* the container's network namespace, to 127.0.0.1 (then ::1), so a server
that listens only on loopback is reachable too, and nothing is published on the runner's machine. A short
helper process enters the namespace (`nsenter`: the net namespace as root; the user namespace first when
rootless, which the runner's user owns), connects, hands the connected socket back over a unix socket
(SCM_RIGHTS) and exits: the bytes then flow through the runner's own socket, with no copy process between.

The first DATA message is empty: connected. Then the connection's bytes, either way; CLOSE ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys

from flex.api.tunnel import MAX_MESSAGE, Stream, StreamClosed
from flex.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from flex.runner.access.exec import ExecService

__all__ = ["PortService", "connect_in_container", "socket_from_container", "splice"]

_HELPER = """
import socket, sys
back = socket.socket(fileno=int(sys.argv[1]))
err = None
for host in ("127.0.0.1", "::1"):
    try:
        s = socket.create_connection((host, int(sys.argv[2])), timeout=10)
    except OSError as e:
        err = err or e  # the IPv4 answer says more than ::1's "cannot assign" where there is no IPv6
        continue
    socket.send_fds(back, [b"ok"], [s.fileno()])
    sys.exit(0)
back.sendall(str(getattr(err, "strerror", None) or err).encode())
"""


def socket_from_container(pid: int, rootless: bool, helper: str, *args: str) -> socket.socket:
    """Run ``helper`` (Python, given a unix socket's fd and ``args``) in the network namespace of process
    ``pid``; the socket it passes back over that fd. OSError with its message when it passes none."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    enter = ["nsenter", "-t", str(pid), *(["-U", "--preserve-credentials"] if rootless else []), "-n", "--"]
    try:
        proc = subprocess.run([*enter, sys.executable, "-S", "-I", "-c", helper, str(theirs.fileno()), *args],
                              pass_fds=(theirs.fileno(),), capture_output=True, timeout=20, cwd="/",
                              stdin=subprocess.DEVNULL)
    finally:
        theirs.close()
    try:
        ours.settimeout(1)
        msg, fds, _, _ = socket.recv_fds(ours, 1024, 1)
    except OSError:
        msg, fds = b"", []
    finally:
        ours.close()
    if fds:
        return socket.socket(fileno=fds[0])
    raise OSError(msg.decode(errors="replace") or proc.stderr.decode(errors="replace").strip()
                  or f"exit {proc.returncode}")


def connect_in_container(pid: int, port: int, rootless: bool) -> socket.socket:
    """A TCP connection to ``port`` on the loopback of the network namespace of process ``pid``."""
    try:
        return socket_from_container(pid, rootless, _HELPER, str(port))
    except OSError as err:
        raise Unavailable(f"cannot connect to port {port} in the environment: {err}",
                          hint="is a server listening on that port inside the environment?") from None


async def splice(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes both ways between a tunnel stream and a connection until either side ends; the caller closes."""

    async def up() -> None:
        while True:
            data = await stream.recv()
            if data:
                writer.write(data)
                await writer.drain()

    async def down() -> None:
        while chunk := await reader.read(MAX_MESSAGE):
            await stream.send(chunk)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, StreamClosed, OSError):
                await t


class PortService:
    def __init__(self, execs: ExecService) -> None:
        self.execs = execs

    def _connect(self, env_id: str, port: int) -> socket.socket:
        with self.execs.client() as client:
            env = client.runner_environment(self.execs.cred.runner_id, env_id)
        running = [c for c in self.execs.machine.of_environment(env_id) if c.state == "running" and c.pid]
        if not running:
            raise FailedPrecondition(f"environment {env.metadata.name!r} is not running",
                                     hint=f"start it: flex start {env.metadata.name}")
        assert running[0].pid is not None
        return connect_in_container(running[0].pid, port, self.execs.machine.rootless)

    async def serve(self, stream: Stream) -> None:
        env_id = str(stream.header.get("env", ""))
        port = stream.header.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidArgument(f"port {port!r}: expected 1-65535")
        try:
            sock = await asyncio.to_thread(self._connect, env_id, port)
        except NotFound:
            raise NotFound("environment not found on this runner") from None
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            await stream.send(b"")

            await splice(stream, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
