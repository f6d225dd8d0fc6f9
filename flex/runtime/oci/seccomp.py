"""The seccomp profile a container runs with: an allowlist, the one Debian ships, applied to the
container's capabilities and architecture the way Docker and podman apply it.

The profile is containers/common's maintained default, read at run time from the Debian package
golang-github-containers-common (``/usr/share/containers/seccomp.json``), never copied into flex. Its
format (moby's, also containers/common's): ``defaultAction``/``defaultErrnoRet``, ``archMap`` (or
``architectures``) and ``syscalls`` rules of ``names`` (or ``name``), ``action``, ``errnoRet``, ``args``,
and ``includes``/``excludes`` by ``caps``, ``arches`` and ``minKernel``. A rule whose includes the
container does not meet, or whose excludes it does, is left out; capabilities count by the bounding set.
Whatever no rule allows is refused (ENOSYS by the package's default), so an unlisted or future syscall
is too: io_uring among them, which Docker and containerd block.

On top of it, without ``--docker``: new namespaces and mounts are refused (``mount`` and the new mount
API, ``unshare``, ``setns``, ``pivot_root``, ``clone`` with ``CLONE_NEW*``), as Docker refuses them
without CAP_SYS_ADMIN — else root inside gets a fresh user namespace's full capabilities.
containers/common allows them to everyone; nested Docker needs them, so ``--docker`` keeps them (and its
capabilities bring in the rules gated on them: sethostname, bpf, ...), inside the container's own user
namespace only. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flex.errors import FailedPrecondition

__all__ = ["PACKAGE_PROFILE", "profile"]

PACKAGE_PROFILE = Path("/usr/share/containers/seccomp.json")
_PACKAGE = "golang-github-containers-common"

# uname machine -> (libseccomp's native arch name, used in includes/excludes "arches"; its SCMP_ARCH_)
_NATIVE = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"), "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"), "i686": ("x86", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
}

# refused without --docker (Docker allows these only with CAP_SYS_ADMIN)
_NAMESPACE_CALLS = ["mount", "umount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsconfig",
                    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr"]
_CLONE_NEW = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000]
_CONFINED = {*_NAMESPACE_CALLS, "clone", "clone3"}


def profile(*, caps: Iterable[str], docker: bool, source: Path = PACKAGE_PROFILE) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container whose bounding set is ``caps`` (``docker``:
    nested Docker allowed)."""
    raw = _read(source)
    bounding = set(caps)
    arch, scmp_arch = _NATIVE.get(os.uname().machine, ("", ""))
    rules: list[dict[str, Any]] = []
    for rule in raw["syscalls"]:
        if not _applies(rule, bounding, arch):
            continue
        names = [n for n in _names(rule) if docker or n not in _CONFINED]
        if names:
            rules.append(_oci_rule(rule, names))
    if not docker:
        rules += _confinement(flags_arg=1 if arch.startswith("s390") else 0)
    out: dict[str, Any] = {"defaultAction": raw["defaultAction"],
                           "architectures": _architectures(raw, scmp_arch), "syscalls": rules}
    if "defaultErrnoRet" in raw:
        out["defaultErrnoRet"] = raw["defaultErrnoRet"]
    return out


def _confinement(*, flags_arg: int) -> list[dict[str, Any]]:
    mask = sum(_CLONE_NEW)
    rules: list[dict[str, Any]] = [
        {"names": _NAMESPACE_CALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": flags_arg, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        # clone3 passes its flags in memory, which seccomp cannot inspect: ENOSYS makes libc use clone
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    # EPERM, not the default ENOSYS: a program asking for a namespace learns it is not allowed one
    for flag in _CLONE_NEW:
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                      "args": [{"index": flags_arg, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]})
    return rules


def _applies(rule: dict[str, Any], bounding: set[str], arch: str) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if arch in (exc.get("arches") or []) or bounding & set(exc.get("caps") or []):
        return False
    if exc.get("minKernel") and _kernel_at_least(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if not set(inc.get("caps") or []) <= bounding:
        return False
    return not (inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]))


def _names(rule: dict[str, Any]) -> list[str]:
    names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
    return [n for n in names if isinstance(n, str)]


def _oci_rule(rule: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"names": names, "action": rule["action"]}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = rule["errnoRet"]
    if rule.get("args"):
        out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in rule["args"]]
    return out


def _architectures(raw: dict[str, Any], scmp_arch: str) -> list[str]:
    if raw.get("architectures"):
        return list(raw["architectures"])
    for entry in raw.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            return [scmp_arch, *(entry.get("subArchitectures") or [])]
    return []  # libseccomp takes the native architecture


def _kernel_at_least(want: str) -> bool:
    def version(s: str) -> tuple[int, ...]:
        m = re.match(r"(\d+)\.(\d+)", s)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return version(os.uname().release) >= version(want)


def _read(source: Path) -> dict[str, Any]:
    hint = f"install (or reinstall) the Debian package {_PACKAGE}: installer/install.sh"
    try:
        raw = json.loads(source.read_text())
    except FileNotFoundError:
        raise FailedPrecondition(f"seccomp profile {source} is missing", hint=hint) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FailedPrecondition(f"seccomp profile {source} cannot be read: {err}", hint=hint) from None
    profile: dict[str, Any] = raw if isinstance(raw, dict) else {}
    ok = (isinstance(profile.get("defaultAction"), str) and isinstance(profile.get("syscalls"), list)
          and all(isinstance(r, dict) and isinstance(r.get("action"), str) for r in profile["syscalls"]))
    if not ok:
        raise FailedPrecondition(f"seccomp profile {source} is not a seccomp profile "
                                 "(defaultAction and syscalls with an action each)", hint=hint)
    return profile
