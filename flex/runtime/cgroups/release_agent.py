"""CVE-2022-0492 on cgroup v1: is this kernel fixed? Asked of the kernel itself, before ``--docker``.

A ``--docker`` container's root holds CAP_SYS_ADMIN in its own user namespace and may unshare mount and
cgroup namespaces. On an unfixed kernel it can then mount a cgroup v1 hierarchy and write its
``release_agent``: a program the kernel runs as real root on the host when a cgroup empties (an escape).
Linux 5.17 fixed it (commit 24f600856418, "cgroup-v1: Require capabilities to set release_agent"; stable
kernels got it from 4.9 up) by requiring CAP_SYS_ADMIN in the initial user namespace for that write.
Distribution kernels carry the fix without changing their version, so a version check would be wrong
both ways: a forked child repeats the attack's steps in throw-away namespaces and writes back the value
the file already holds, which is harmless whatever the answer. On cgroup v2 there is no release_agent.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from flex.errors import FailedPrecondition

__all__ = ["FIXED", "VULNERABLE", "probe", "require_fix"]

FIXED = "fixed"
VULNERABLE = "vulnerable"

_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUSER = 0x00020000, 0x02000000, 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
# the child's exit codes
_WROTE, _REFUSED, _NO_MOUNT, _NO_USERNS, _OTHER = 10, 11, 12, 13, 14
_libc = ctypes.CDLL(None, use_errno=True)


def _hierarchy() -> str | None:
    """The controllers of one v1 hierarchy this process is in (a mount must name all of them)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, _ = line.split(":", 2)
            if controllers and not controllers.startswith("name="):
                return controllers
    return None


def _child(controllers: str, target: str) -> int:  # pragma: no cover - runs in the forked child
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWCGROUP) != 0:
        return _NO_USERNS
    try:
        for path, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{path}", "w") as f:
                f.write(text)
    except OSError:
        return _NO_USERNS
    _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
    if _libc.mount(b"cgroup", target.encode(), b"cgroup", 0, controllers.encode()) != 0:
        return _NO_MOUNT
    agent = os.path.join(target, "release_agent")
    try:
        with open(agent, "rb") as f:
            current = f.read()
        fd = os.open(agent, os.O_WRONLY)
    except OSError as err:
        return _REFUSED if err.errno in (errno.EPERM, errno.EACCES) else _OTHER
    try:
        os.write(fd, current or b"\n")
    except OSError as err:
        return _REFUSED if err.errno in (errno.EPERM, errno.EACCES) else _OTHER
    finally:
        os.close(fd)
    return _WROTE


def probe() -> str:
    """FIXED, VULNERABLE, or why it cannot tell (a sentence)."""
    controllers = _hierarchy()
    if controllers is None:
        return FIXED  # no v1 hierarchy with controllers: nothing to mount
    target = tempfile.mkdtemp(prefix="flex-release-agent-")
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = _OTHER
            try:
                code = _child(controllers, target)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code == _WROTE:
        return VULNERABLE
    if code in (_REFUSED, _NO_MOUNT):  # a mount refused here is refused to the container too
        return FIXED
    if code == _NO_USERNS:
        return "no user namespace could be made to check it in"
    return f"the check failed (exit {code})"


def require_fix() -> None:
    """Refuse ``--docker`` on cgroup v1 unless the kernel has the fix (and say which it is)."""
    answer = probe()
    if answer == FIXED:
        return
    if answer == VULNERABLE:
        raise FailedPrecondition(
            f"--docker refused: this kernel ({os.uname().release}) lacks the fix for CVE-2022-0492 "
            "(a container could set a cgroup v1 release_agent and run a program as root on the host)",
            hint="upgrade the kernel (fixed in Linux 5.17 and the stable kernels), or run on cgroup v2")
    raise FailedPrecondition(f"--docker refused: cannot tell whether this kernel has the fix for CVE-2022-0492 "
                             f"(cgroup v1 release_agent): {answer}",
                             hint="run on cgroup v2, or on a kernel where user namespaces work")
