"""Mounting an overlayfs of any number of layers (up to the kernel's 500).

mount(2) copies its option string into one page, so ``lowerdir=/a/long/path:…`` of absolute paths
fits about 59 layers of a FLEX_HOME under /var/tmp. Past a page there are two ways, tried in order:

1. ``lowerdir+`` (Linux 6.8+): the new mount API (fsopen, fsconfig, fsmount, move_mount) takes one
   layer per fsconfig call, so the page limit is per path.
2. Short relative names (any kernel): the lower dirs' common parent becomes the working directory of
   a forked child, which mounts ``lowerdir=12/fs:11/fs:…`` (containerd's compactLowerdirOption; podman
   makes short symlinks for the same reason). The child keeps the caller's cwd untouched.

Imports nothing from flex.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MAX_OPTIONS", "mount_overlay", "overlay_options"]

MAX_OPTIONS = os.sysconf("SC_PAGE_SIZE") - 1  # the option string and its NUL share one page

# the new mount API has the same numbers on every architecture (added after the syscall tables merged)
_FSOPEN, _FSCONFIG, _FSMOUNT, _MOVE_MOUNT = 430, 431, 432, 429
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100
_MS_RDONLY = 1

_libc = ctypes.CDLL(None, use_errno=True)


def overlay_options(lowers: Sequence[str | Path], upper: str | Path | None = None, work: str | Path | None = None,
                    options: Sequence[str] = ()) -> str:
    """The mount(2) option string: lowerdir (top first), upperdir, workdir, then ``options``."""
    for p in (*lowers, *(x for x in (upper, work) if x is not None)):
        if any(c in str(p) for c in ":,\\"):
            raise OSError(errno.EINVAL, f"overlay layer path {str(p)!r} contains ':', ',' or '\\'")
    parts = ["lowerdir=" + ":".join(str(p) for p in lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    return ",".join([*parts, *options])


def mount_overlay(target: Path, lowers: Sequence[Path], *, upper: Path | None = None, work: Path | None = None,
                  options: Sequence[str] = (), lowerdir_plus: bool | None = None) -> None:
    """Mount an overlay of ``lowers`` (top first) on ``target``; read-write with ``upper`` and ``work``.
    ``options`` are further mount options (``userxattr``, ``ro``). ``lowerdir_plus`` forces (True) or
    skips (False) the new mount API when the options do not fit a page; None tries it, then falls back.
    Raises OSError."""
    if not lowers:
        raise OSError(errno.EINVAL, "an overlay needs at least one lower directory")
    data = overlay_options(lowers, upper, work, options)
    if len(data) <= MAX_OPTIONS:
        _mount(target, data)
        return
    if lowerdir_plus is not False:
        try:
            _mount_lowerdir_plus(target, lowers, upper, work, options)
            return
        except _NoLowerdirPlus:
            if lowerdir_plus:
                raise OSError(errno.EINVAL, "this kernel has no overlay 'lowerdir+' (Linux 6.8+)") from None
    _mount_relative(target, lowers, upper, work, options)


class _NoLowerdirPlus(Exception):
    pass


def _mount(target: Path, data: str) -> None:
    flags = _MS_RDONLY if "ro" in data.split(",") else 0
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", ctypes.c_ulong(flags), data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting an overlay on {target}: {os.strerror(err)}")


def _syscall(nr: int, *args: object) -> int:
    rv = int(_libc.syscall(ctypes.c_long(nr), *args))
    if rv < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return rv


def _fsconfig(fd: int, cmd: int, key: str | None, value: str | None) -> None:
    _syscall(_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), key.encode() if key is not None else None,
             os.fsencode(value) if value is not None else None, ctypes.c_int(0))


def _mount_lowerdir_plus(target: Path, lowers: Sequence[Path], upper: Path | None, work: Path | None,
                         options: Sequence[str]) -> None:
    try:
        fs = _syscall(_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    except OSError as err:
        raise _NoLowerdirPlus() if err.errno in (errno.ENOSYS, errno.EPERM) else err from None
    try:
        try:
            _fsconfig(fs, _FSCONFIG_SET_STRING, "lowerdir+", str(lowers[0]))
        except OSError as err:
            if err.errno == errno.EINVAL:  # "Unknown parameter": older than 6.8
                raise _NoLowerdirPlus() from None
            raise OSError(err.errno, f"overlay layer {lowers[0]}: {err.strerror}") from None
        for lower in lowers[1:]:
            try:
                _fsconfig(fs, _FSCONFIG_SET_STRING, "lowerdir+", str(lower))
            except OSError as err:
                raise OSError(err.errno, f"overlay layer {lower}: {err.strerror}") from None
        if upper is not None and work is not None:
            _fsconfig(fs, _FSCONFIG_SET_STRING, "upperdir", str(upper))
            _fsconfig(fs, _FSCONFIG_SET_STRING, "workdir", str(work))
        for opt in options:
            key, sep, value = opt.partition("=")
            _fsconfig(fs, _FSCONFIG_SET_STRING if sep else _FSCONFIG_SET_FLAG, key, value if sep else None)
        try:
            _fsconfig(fs, _FSCONFIG_CMD_CREATE, None, None)
        except OSError as err:
            raise OSError(err.errno, f"mounting an overlay of {len(lowers)} layers on {target}: "
                          f"{err.strerror}") from None
        mnt = _syscall(_FSMOUNT, ctypes.c_int(fs), ctypes.c_uint(_FSMOUNT_CLOEXEC), ctypes.c_uint(0))
        try:
            _syscall(_MOVE_MOUNT, ctypes.c_int(mnt), b"", ctypes.c_int(_AT_FDCWD), os.fsencode(target),
                     ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def _mount_relative(target: Path, lowers: Sequence[Path], upper: Path | None, work: Path | None,
                    options: Sequence[str]) -> None:
    base = os.path.commonpath([os.path.abspath(p) for p in lowers])
    rel = [os.path.relpath(os.path.abspath(p), base) for p in lowers]
    data = overlay_options(rel, upper and os.path.abspath(upper), work and os.path.abspath(work), options)
    if len(data) > MAX_OPTIONS:
        raise OSError(errno.E2BIG, f"an overlay of {len(lowers)} layers does not fit one mount(2) option page, "
                      "even with relative names (Linux 6.8+ takes any number through 'lowerdir+')")
    target_abs = os.path.abspath(target)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: chdir is per process, so the caller's cwd never moves
        code = 1
        try:
            os.close(r)
            os.chdir(base)
            _mount(Path(target_abs), data)
            code = 0
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.write(w, f"{getattr(err, 'errno', None) or errno.EIO}:{err}".encode()[:1000])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if msg or os.waitstatus_to_exitcode(status) != 0:
        num, _, text = msg.partition(":")
        raise OSError(int(num) if num.isdigit() else errno.EIO, text)
