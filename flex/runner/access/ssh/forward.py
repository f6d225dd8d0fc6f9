"""`ssh -L`: a direct-tcpip channel carried to a port on the environment's own loopback, connected inside its
network namespace as `flex port-forward` connects (flex/runner/access/ports.py); nothing listens on the runner."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import asyncssh

__all__ = ["LOOPBACK", "SocketBridge", "forward_to"]

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"})
_HIGH = 1 << 20


class SocketBridge(asyncssh.SSHTCPSession[bytes]):
    """An SSH channel's bytes to and from a connected socket, each side paced by the other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._task = asyncio.ensure_future(self._down())

    async def _down(self) -> None:
        assert self._chan is not None
        with contextlib.suppress(OSError):
            while data := await self.reader.read(64 * 1024):
                await self._writable.wait()
                self._chan.write(data)
        with contextlib.suppress(OSError, asyncssh.Error):
            self._chan.write_eof()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.writer.write(data)
        if self._chan is not None and self.writer.transport.get_write_buffer_size() > _HIGH:
            self._chan.pause_reading()
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        with contextlib.suppress(OSError):
            await self.writer.drain()
        if self._chan is not None:
            self._chan.resume_reading()

    def eof_received(self) -> bool:
        with contextlib.suppress(OSError):
            self.writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()


async def forward_to(connect: Callable[[int], socket.socket], host: str, port: int) -> SocketBridge:
    if host.strip("[]").lower() not in LOOPBACK:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                        f"only ports on the environment's own loopback can be forwarded, not {host}")
    try:
        sock = await asyncio.to_thread(connect, port)
    except Exception as err:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(err)) from None
    reader, writer = await asyncio.open_connection(sock=sock)
    return SocketBridge(reader, writer)
