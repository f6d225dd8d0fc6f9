"""The seccomp profile: the Debian package's allowlist, applied by capabilities and architecture the way
Docker and podman apply it, with the namespace and mount syscalls only under --docker. Real containers
try it in tests/runtime/containers/test_escapes.py and test_docker.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flex.errors import FailedPrecondition
from flex.runtime.oci import seccomp
from flex.runtime.oci.spec import DEFAULT_CAPS, DOCKER_EXTRA_CAPS, default_spec, with_docker

needs_package = pytest.mark.skipif(not seccomp.PACKAGE_PROFILE.exists(),
                                   reason="golang-github-containers-common is not installed (installer/install.sh)")


def _allowed(prof: dict[str, Any]) -> set[str]:
    """Syscalls some rule allows, with or without argument conditions."""
    return {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}


def _unconditional(prof: dict[str, Any], action: str) -> set[str]:
    return {n for r in prof["syscalls"] if r["action"] == action and not r.get("args") for n in r["names"]}


@needs_package
def test_allowlist_from_the_package_refuses_io_uring_and_anything_unlisted() -> None:
    prof = seccomp.profile(caps=DEFAULT_CAPS, docker=False)
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    package = json.loads(seccomp.PACKAGE_PROFILE.read_text())
    assert prof.get("defaultErrnoRet") == package.get("defaultErrnoRet")
    allowed = _allowed(prof)
    assert {"read", "write", "openat", "execve", "clone", "futex", "chroot"} <= allowed
    assert not {n for n in allowed if n.startswith("io_uring")}
    for r in prof["syscalls"]:  # only OCI fields reach crun
        assert set(r) <= {"names", "action", "errnoRet", "args"}, r


@needs_package
def test_rules_follow_the_bounding_set() -> None:
    plain = seccomp.profile(caps=DEFAULT_CAPS, docker=False)
    more = seccomp.profile(caps=[*DEFAULT_CAPS, "CAP_DAC_READ_SEARCH", "CAP_SYS_TIME"], docker=False)
    for name in ("open_by_handle_at", "clock_settime"):
        assert name not in _allowed(plain) and name in _unconditional(plain, "SCMP_ACT_ERRNO")
        assert name in _allowed(more) and name not in _unconditional(more, "SCMP_ACT_ERRNO")


@needs_package
def test_namespaces_and_mounts_only_with_docker() -> None:
    plain = default_spec(["true"], rootfs=Path("/nonexistent"), hostname="h")
    docker = with_docker(plain)
    p, d = plain["linux"]["seccomp"], docker["linux"]["seccomp"]
    confined = {"mount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "move_mount", "open_tree"}
    assert confined <= _unconditional(p, "SCMP_ACT_ERRNO") and not confined & _allowed(p)
    assert confined <= _unconditional(d, "SCMP_ACT_ALLOW")
    # clone only without CLONE_NEW* flags; clone3 (flags out of seccomp's sight) ENOSYS so libc uses clone
    clone_allow = [r for r in p["syscalls"] if r["names"] == ["clone"] and r["action"] == "SCMP_ACT_ALLOW"]
    assert clone_allow == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                            "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in p["syscalls"]
    assert {"clone", "clone3"} <= _unconditional(d, "SCMP_ACT_ALLOW")
    # --docker's CAP_SYS_ADMIN brings in what the package gates on it (sethostname for dockerd's containers)
    assert "sethostname" in _allowed(d) and "sethostname" not in _allowed(p)
    assert set(DOCKER_EXTRA_CAPS) <= set(docker["process"]["capabilities"]["bounding"])


def test_includes_and_excludes_by_caps_arches_and_kernel(tmp_path: Path) -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if arch is None:
        pytest.skip(f"no test arch names for {os.uname().machine}")
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}},
            {"name": "write", "action": "SCMP_ACT_ALLOW", "args": None},
            {"names": ["mine"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": [arch]}},
            {"names": ["other"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["notmine"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": [arch]}},
            {"names": ["both"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_A", "CAP_B"]}},
            {"names": ["nob"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_B"]}},
            {"names": ["old"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "2.6"}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["pers"], "action": "SCMP_ACT_ALLOW", "errno": "EPERM",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        ],
    }
    src = tmp_path / "seccomp.json"
    src.write_text(json.dumps(profile))
    names = {n for r in seccomp.profile(caps=["CAP_A"], docker=True, source=src)["syscalls"] for n in r["names"]}
    assert names == {"read", "write", "mine", "nob", "old", "pers"}
    out = seccomp.profile(caps=["CAP_A", "CAP_B"], docker=True, source=src)
    assert {n for r in out["syscalls"] for n in r["names"]} == {"read", "write", "mine", "both", "old", "pers"}
    assert out["architectures"][0] == ("SCMP_ARCH_X86_64" if arch == "amd64" else "SCMP_ARCH_AARCH64")
    assert len(out["architectures"]) == 2
    assert out["defaultErrnoRet"] == 38
    assert {"names": ["pers"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]} in out["syscalls"]


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"syscalls": []}),
                                     json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": []}]})])
def test_a_missing_or_broken_profile_is_one_clear_error(tmp_path: Path, content: str | None) -> None:
    src = tmp_path / "seccomp.json"
    if content is not None:
        src.write_text(content)
    with pytest.raises(FailedPrecondition) as info:
        seccomp.profile(caps=DEFAULT_CAPS, docker=False, source=src)
    assert str(src) in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint is not None and "golang-github-containers-common" in info.value.hint
