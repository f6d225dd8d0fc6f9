"""A running container's own files, as its processes see them: through ``/proc/PID/root`` of its PID 1,
with every path resolved inside that root (openat2 RESOLVE_IN_ROOT: ``..`` and absolute symlinks stop at
the container's ``/``, as runc's securejoin does), so an exec finds what a lifecycle hook added and a
planted symlink never reaches the host's files. Used by ``exec`` for ``-u NAME`` (the container's
/etc/passwd, not the image's) and to tell a missing command before crun runs it.
Imports nothing from flex but containers/rootfs (the /etc/passwd parser).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat

from flex.runtime.containers.rootfs import user_ids

__all__ = ["can_look_inside", "find_executable", "lookup_user", "read_text"]

_SYS_OPENAT2 = 437  # the same on every architecture (unified numbers from 403 on)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_TEXT = 4 << 20


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _open_inside(pid: int, path: str, flags: int) -> int:
    """An fd for ``path`` inside the root of process ``pid``; OSError as open(2) raises it."""
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        fd = libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root), ctypes.c_char_p(path.encode()),
                          ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(fd)
    finally:
        os.close(root)


def can_look_inside(pid: int) -> bool:
    """Whether this process may look into the root of ``pid`` (it may not, say, after the pid went)."""
    try:
        os.close(_open_inside(pid, "/", os.O_PATH | os.O_DIRECTORY))
    except OSError:
        return False
    return True


def read_text(pid: int, path: str) -> str | None:
    """The text of a regular file inside the container (at most 4 MiB), or None if there is none."""
    try:
        fd = _open_inside(pid, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(_MAX_TEXT).decode(errors="replace")


def find_executable(pid: int, command: str, env: list[str], cwd: str) -> bool | None:
    """Whether ``command`` names a file inside the container, the way execvp looks (PATH from ``env``
    unless it holds a slash); None when the container cannot be looked into (then crun decides)."""
    path_var = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/local/bin:/usr/bin:/bin")
    if "/" in command:
        candidates = [command if command.startswith("/") else f"{cwd.rstrip('/')}/{command}"]
    else:
        candidates = [f"{d.rstrip('/') or ''}/{command}" if d else f"{cwd.rstrip('/')}/{command}"
                      for d in path_var.split(":")]
    if not can_look_inside(pid):
        return None
    for cand in candidates:
        with contextlib.suppress(OSError):
            fd = _open_inside(pid, cand, os.O_PATH)
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    return True
            finally:
                os.close(fd)
    return False


def lookup_user(pid: int, user: str) -> tuple[int, int, list[int]]:
    """``-u`` of exec as the container's own /etc/passwd and /etc/group say (a user a lifecycle hook added
    since the start counts), as Docker resolves it."""
    return user_ids(user, read_text(pid, "/etc/passwd"), read_text(pid, "/etc/group"), where="the container's")
