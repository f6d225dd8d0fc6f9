"""Terminals: receive a container's pty master from the OCI runtime's console socket, and bridge it to
ours (raw mode, window size kept in step on SIGWINCH). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import tempfile
import termios
import tty
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from flex.errors import FlexError

__all__ = ["ConsoleSocket", "console_size", "copy_winsize", "raw_terminal", "resize_on_sigwinch"]


class ConsoleSocket:
    """A listening unix socket for ``--console-socket``; ``receive()`` returns the pty master fd.

    It lives in a private directory under /tmp: a unix socket path must be short (108 bytes), and a
    bundle path under FLEX_HOME may not be."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="flex-tty-"))
        self.path = path = self._dir / "console.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)

    def receive(self, timeout: float = 30.0) -> int:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            raise FlexError("the OCI runtime never sent the container's terminal") from None
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        if not fds:
            raise FlexError("the OCI runtime sent no terminal")
        return fds[0]

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self._dir.rmdir()


def console_size(fd: int) -> dict[str, int] | None:
    """OCI ``process.consoleSize`` of the terminal ``fd`` (crun sizes the pty before the process runs)."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0)))
    except OSError:
        return None
    return {"height": rows, "width": cols} if rows and cols else None


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    old = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


@contextlib.contextmanager
def resize_on_sigwinch(our_fd: int, master_fd: int) -> Iterator[None]:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        copy_winsize(our_fd, master_fd)

    copy_winsize(our_fd, master_fd)
    old = signal.signal(signal.SIGWINCH, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, old)
