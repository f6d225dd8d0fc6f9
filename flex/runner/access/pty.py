"""A session's terminal, shared by exec and SSH sessions: the master side of the container's own pty (crun hands
it over, flex/runner/access/spawn.py), read and written without blocking the event loop. Setting its size makes
the kernel send the command SIGWINCH."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios

__all__ = ["Pty", "set_size"]

_CHUNK = 32 * 1024


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Pty:
    """``proc``: crun exec, whose command runs on the pty; ``read``/``write`` its terminal; ``close`` at the end."""

    def __init__(self, master: int, proc: asyncio.subprocess.Process) -> None:
        self.master, self.proc = master, proc
        self._readable = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._readable.set)

    async def read(self) -> bytes:
        """The terminal's next output; b"" once every holder of its other side has gone."""
        while True:
            try:
                return os.read(self.master, _CHUNK)
            except BlockingIOError:
                self._readable.clear()
                await self._readable.wait()
            except OSError:  # EIO: the other side is closed everywhere
                return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                await asyncio.sleep(0.005)

    async def end_input(self) -> None:
        await self.write(b"\x04")  # end of input on a terminal is ^D

    def resize(self, cols: int, rows: int) -> None:
        set_size(self.master, cols, rows)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
