"""The seccomp profiles containers run with: a deny list over an allow-by-default base.

Denied for every container: kernel modules, kexec, reboot, swap, clock setting, BPF, perf, keyrings
(ENOSYS, so runc/dockerd inside fall back cleanly), open_by_handle_at (the classic container escape),
userfaultfd, and the rest of the syscalls Docker's default profile refuses. Without ``--docker`` new
namespaces and mounts are refused too (unshare, setns, mount, clone with CLONE_NEW*), so root inside
cannot get a fresh user namespace's capabilities; ``--docker`` allows them because dockerd needs them,
still inside the container's own user namespace only. Imports nothing from flex.
"""

from __future__ import annotations

import errno
import os
from typing import Any

__all__ = ["profile"]

_ALWAYS_DENIED = [
    "acct", "bpf", "clock_adjtime", "clock_settime", "settimeofday", "stime", "create_module",
    "delete_module", "finit_module", "init_module", "get_kernel_syms", "query_module", "kexec_file_load",
    "kexec_load", "lookup_dcookie", "nfsservctl", "open_by_handle_at", "perf_event_open", "quotactl",
    "quotactl_fd", "reboot", "swapoff", "swapon", "sysfs", "_sysctl", "uselib", "userfaultfd", "ustat",
    "vm86", "vm86old", "iopl", "ioperm", "syslog", "fsconfig_unsafe", "pciconfig_read", "pciconfig_write",
]
_KEYRING = ["add_key", "keyctl", "request_key"]
_NAMESPACES = ["mount", "umount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsmount",
               "move_mount", "open_tree", "mount_setattr", "fspick"]
_CLONE_NEW = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000]


def _arches() -> list[str]:
    machine = os.uname().machine
    if machine == "aarch64":
        return ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    return ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def profile(*, docker: bool) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container (``docker``: nested Docker allowed)."""
    rules: list[dict[str, Any]] = [
        {"names": _ALWAYS_DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": _KEYRING, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    if not docker:
        rules.append({"names": _NAMESPACES, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM})
        # clone3 passes flags in memory, which seccomp cannot inspect: ENOSYS makes libc fall back to clone.
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
        for flag in _CLONE_NEW:
            rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                          "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": _arches(), "syscalls": rules}
