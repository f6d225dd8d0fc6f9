"""OCI runtime config (config.json) for a container: safe defaults plus ``with_*`` modifiers.

``default_spec()`` gives a process in new pid/ipc/uts/mount/network/cgroup namespaces with Docker's default
capabilities (which only ever count inside the container's user namespace), masked and read-only /proc
paths, a fresh sysfs mounted read-only, only the safe device set, rlimits within the host's hard limits
(never RLIMIT_NOFILE above it: root cannot raise it here) and a seccomp profile. No no-new-privileges by
default, as in Docker and podman: devcontainer images run as a non-root ``remoteUser`` with passwordless
sudo, and sudo is a setuid binary (``with_no_new_privileges`` turns it on). Modifiers change one aspect
each. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from flex.runtime.oci import seccomp
from flex.runtime.userns.idmap import IdMap

__all__ = [
    "DEFAULT_CAPS",
    "DOCKER_EXTRA_CAPS",
    "default_spec",
    "with_bind",
    "with_cgroup",
    "with_docker",
    "with_env",
    "with_idmap",
    "with_init",
    "with_netns",
    "with_no_new_privileges",
    "with_resources",
    "with_rootless",
    "with_runc_compat",
]

Spec = dict[str, Any]

# Docker's default capability set (never CAP_SYS_RESOURCE: not in this host's bounding set).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
DOCKER_EXTRA_CAPS = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_IPC_LOCK"]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    "/proc/kallsyms", "/proc/sysrq-trigger",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]

_SAFE_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
                 ("tty", 5, 0)]


def _rlimits() -> list[dict[str, Any]]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1048576 if hard == resource.RLIM_INFINITY else hard
    return [{"type": "RLIMIT_NOFILE", "hard": want, "soft": min(want, 65536)}]


def default_spec(args: list[str], *, rootfs: Path, hostname: str, env: list[str] | None = None,
                 cwd: str = "/", uid: int = 0, gid: int = 0, additional_gids: list[int] | None = None,
                 terminal: bool = False) -> Spec:
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids or []},
            "args": args,
            "env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": cwd,
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": _rlimits(),
            "noNewPrivileges": False,
            "oomScoreAdj": 0,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network", "cgroup")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.profile(caps=caps, docker=False),
            "devices": [{"path": f"/dev/{n}", "type": "c", "major": a, "minor": b, "fileMode": 0o666,
                         "uid": 0, "gid": 0} for n, a, b in _SAFE_DEVICES],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]
                          + [{"allow": True, "type": "c", "major": a, "minor": b, "access": "rwm"}
                             for _, a, b in _SAFE_DEVICES]
                          + [{"allow": True, "type": "c", "major": 136, "access": "rwm"},
                             {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"}]},
        },
    }


def _copy(spec: Spec) -> Spec:
    """A deep copy (through JSON, what a spec is: several times faster than copy.deepcopy) that shares the
    seccomp profile, most of the spec: modifiers never change a profile in place; with_docker puts in a new one."""
    linux = spec.get("linux")
    out: Spec
    if not isinstance(linux, dict) or "seccomp" not in linux:
        out = json.loads(json.dumps(spec))
        return out
    out = json.loads(json.dumps({k: v for k, v in spec.items() if k != "linux"}))
    out["linux"] = json.loads(json.dumps({k: v for k, v in linux.items() if k != "seccomp"}))
    out["linux"]["seccomp"] = linux["seccomp"]
    return out


def with_idmap(spec: Spec, idmap: IdMap) -> Spec:
    """Run in a new user namespace with these maps (root runner)."""
    s = _copy(spec)
    s["linux"]["namespaces"].append({"type": "user"})
    s["linux"].update(idmap.to_oci())
    return s


def with_rootless(spec: Spec, keeper: IdMap, inner: IdMap | None = None) -> Spec:
    """crun already runs inside the user's namespace (userns.py, mapped by ``keeper``). The container
    gets a user namespace of its own inside it, mapping the keeper's ids one to one (or as ``inner`` says:
    ``--userns keep-id``, container ids onto keeper ids): its root then holds
    no capability in the keeper's namespace, which owns the outer network namespace and its guard
    (net_outer.py), the other containers' namespaces and the rootfs mounts. No device nodes (crun 1.8.1
    rootless fails on them: bind-mount the safe set instead), no cgroups of its own on cgroup v1."""
    s = _copy(spec)
    s["linux"]["namespaces"].append({"type": "user"})
    if inner is not None:  # (keep_id.py: each range already lies inside one range of the keeper's map)
        s["linux"].update(inner.to_oci())
    else:
        # One line per line of the keeper's map: the kernel wants each range inside one range of the parent's.
        s["linux"]["uidMappings"] = [{"containerID": a, "hostID": a, "size": n} for a, _, n in keeper.uids]
        s["linux"]["gidMappings"] = [{"containerID": a, "hostID": a, "size": n} for a, _, n in keeper.gids]
    devs = s["linux"].pop("devices", [])
    s["linux"]["resources"].pop("devices", None)
    for d in devs:
        s["mounts"].append({"destination": d["path"], "type": "bind", "source": d["path"],
                            "options": ["bind", "nosuid", "noexec"]})
    # the fresh sysfs stays: the container's user namespace owns its network namespace, so it may mount
    # a sysfs showing it
    return s


def with_env(spec: Spec, env: list[str]) -> Spec:
    s = _copy(spec)
    s["process"]["env"] = env
    return s


def with_bind(spec: Spec, source: Path, destination: str, *, readonly: bool) -> Spec:
    s = _copy(spec)
    opts = ["rbind", "nosuid", "nodev"] + (["ro"] if readonly else ["rw"])
    s["mounts"].append({"destination": destination, "type": "bind", "source": str(source), "options": opts})
    return s


def with_init(spec: Spec, init_binary: Path) -> Spec:
    """A minimal PID 1 (tini) bind-mounted read-only at /dev/init, which reaps zombies and forwards
    signals to the whole process group of the command."""
    s = _copy(spec)
    s["mounts"].append({"destination": "/dev/init", "type": "bind", "source": str(init_binary),
                        "options": ["bind", "ro", "nosuid", "nodev"]})
    s["process"]["args"] = ["/dev/init", "-s", "-g", "--", *s["process"]["args"]]
    return s


def with_netns(spec: Spec, path: str | None) -> Spec:
    """Join an existing network namespace (prepared by network.py) instead of a new one."""
    s = _copy(spec)
    for ns in s["linux"]["namespaces"]:
        if ns["type"] == "network":
            if path:
                ns["path"] = path
            else:
                ns.pop("path", None)
    return s


def with_no_new_privileges(spec: Spec) -> Spec:
    """``--security-opt no-new-privileges``: setuid/setgid bits and file capabilities stop working."""
    s = _copy(spec)
    s["process"]["noNewPrivileges"] = True
    return s


def with_cgroup(spec: Spec, path: str) -> Spec:
    s = _copy(spec)
    s["linux"]["cgroupsPath"] = path
    return s


def with_resources(spec: Spec, resources: dict[str, Any]) -> Spec:
    s = _copy(spec)
    s["linux"].setdefault("resources", {}).update(resources)
    return s


def with_runc_compat(spec: Spec) -> Spec:
    """runc (the fallback runtime) cannot mount a fresh sysfs in a new user namespace here (EPERM):
    give it the host's /sys read-only instead, as podman does with runc rootless. Masked paths apply."""
    s = _copy(spec)
    for m in s["mounts"]:
        if m["destination"] == "/sys" and m["type"] == "sysfs":
            m.update({"type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    return s


def with_docker(spec: Spec) -> Spec:
    """What dockerd needs inside (../shared/notes/this-machine.md): read-write fresh sysfs, the
    container's own cgroup tree at /sys/fs/cgroup, a tmpfs /run, /dev/fuse and /dev/net/tun, the extra
    capabilities (inside the user namespace only) and a seccomp profile that lets them be used."""
    s = _copy(spec)
    for m in s["mounts"]:
        if m["destination"] == "/sys":
            m["options"] = ["nosuid", "noexec", "nodev", "rw"]
    s["mounts"] += [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=755", "size=262144k"]},
        {"destination": "/dev/fuse", "type": "bind", "source": "/dev/fuse", "options": ["bind", "nosuid"]},
        {"destination": "/dev/net/tun", "type": "bind", "source": "/dev/net/tun", "options": ["bind", "nosuid"]},
    ]
    caps = s["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k] = caps[k] + [c for c in DOCKER_EXTRA_CAPS if c not in caps[k]]
    s["linux"]["seccomp"] = seccomp.profile(caps=caps["bounding"], docker=True)
    s["linux"]["readonlyPaths"] = [p for p in s["linux"]["readonlyPaths"] if p != "/proc/sys"]
    res = s["linux"].setdefault("resources", {})
    if "devices" in res:
        res["devices"] += [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                           {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]
    return s
