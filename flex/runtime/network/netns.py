"""Network namespaces as files: create, enter (one thread at a time), remove.

Owns the persistent netns files of a root runner (FLEX_HOME/run/netns/<container id>), made the way
iproute2 makes /run/netns/NAME: unshare(CLONE_NEWNET) and bind-mount the new namespace onto a file.
Namespaces are per *thread* in Linux, so every operation runs in a short-lived thread of its own: the
calling thread (and so the rest of the process) never changes namespace. Imports nothing from flex
but flex.errors; no pyroute2 here (callers import it lazily inside the thread function).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from flex.errors import FailedPrecondition

__all__ = ["create_netns", "in_netns", "remove_netns"]

_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread (so a namespace change dies with it) and return or raise its result."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    th = threading.Thread(target=run, name="flex-netns")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def create_netns(path: Path) -> None:
    """Create a network namespace bound to ``path`` (an empty file is created first). Safe to repeat:
    an existing, mounted ``path`` is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and _is_nsfs(path):
        return
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o444)
    os.close(fd)

    def make() -> None:
        if _libc.unshare(_CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"cannot create a network namespace: {os.strerror(err)}",
                                     hint="a root runner needs CAP_SYS_ADMIN; rootless runners use slirp4netns")
        if _libc.mount(b"/proc/thread-self/ns/net", os.fsencode(path), None, _MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"cannot bind the network namespace to {path}: {os.strerror(err)}")

    _in_thread(make)


def _is_nsfs(path: Path) -> bool:
    # A bound namespace file lives on nsfs, whose inodes differ from the placeholder file's filesystem.
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


def in_netns(path: str | Path, fn: Callable[[], T]) -> T:
    """Run ``fn`` with its thread inside the network namespace at ``path`` (sockets it opens stay there)."""

    def run() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise FailedPrecondition(f"cannot enter network namespace {path}: {os.strerror(err)}")
        finally:
            os.close(fd)
        return fn()

    return _in_thread(run)


def remove_netns(path: Path) -> None:
    """Unmount and delete a namespace file; missing is fine. The namespace itself goes away when the last
    process in it exits."""
    if _libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise FailedPrecondition(f"cannot unmount network namespace {path}: {os.strerror(err)}")
    path.unlink(missing_ok=True)
