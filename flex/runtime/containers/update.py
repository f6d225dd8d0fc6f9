"""Changing a container's CPU and memory without a restart (what `docker update` does).

The new resources go into the bundle's config.json, which every start reads, and, while the container runs,
into its cgroup through the OCI runtime's ``update``. CPU is a *weight* (``shares``, 1024 per CPU; crun turns
it into cpu.weight on cgroup v2) with no quota: a container may use idle CPU and is held to its share only
when others want theirs (how Kubernetes treats a request without a limit). Memory stays a hard limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flex.atomic import write_atomic
from flex.runtime.containers.store import Container, Containers

__all__ = ["SHARES_PER_CPU", "Resources", "add_capabilities", "apply_resources", "current_resources",
           "wanted_resources"]

SHARES_PER_CPU = 1024

Resources = dict[str, dict[str, int]]


def wanted_resources(cpus: float | None, memory: int | None) -> Resources:
    res: Resources = {}
    if cpus is not None:
        # no quota: the weight alone decides under contention (crun cannot write "no quota" back as -1)
        res["cpu"] = {"shares": max(2, round(cpus * SHARES_PER_CPU))}
    if memory is not None:
        res["memory"] = {"limit": memory, "swap": memory}
    return res


def current_resources(store: Containers, c: Container) -> Resources:
    """The cpu and memory entries of the container's config.json."""
    config = json.loads((store.bundle(c.id) / "config.json").read_text())
    res = config.get("linux", {}).get("resources", {})
    return {k: dict(res[k]) for k in ("cpu", "memory") if k in res}


def apply_resources(store: Containers, c: Container, cpus: float | None, memory: int | None) -> bool:
    """Give ``c`` a CPU weight of ``cpus`` and a memory limit of ``memory`` (None: leave as is); True if
    anything changed. Safe to repeat: the config is written first, the running cgroup after."""
    want = wanted_resources(cpus, memory)
    path = store.bundle(c.id) / "config.json"
    config = json.loads(path.read_text())
    res = config.setdefault("linux", {}).setdefault("resources", {})
    changed = any(res.get(k) != v for k, v in want.items())
    if changed:
        res.update(want)
        write_atomic(path, json.dumps(config), mode=0o600, durable=False)
    if c.state == "running" and (changed or not _cgroup_has(c, want)):
        tmp = store.bundle(c.id) / f"resources-{os.getpid()}.json"
        write_atomic(tmp, json.dumps(want), mode=0o600, durable=False)
        try:
            store.runtime.update(c.id, tmp)
        finally:
            tmp.unlink(missing_ok=True)
    return changed


def _cgroup_has(c: Container, want: Resources) -> bool:
    """Whether the live cgroup already carries ``want`` (a runner killed between config and cgroup)."""
    from flex.runtime.cgroups.cgroups import read_counter

    if c.cgroup is None:
        return True
    if "cpu" in want:
        got = read_counter(c.cgroup, "cpu", "cpu.shares", "cpu.weight")
        if got is None:
            return True
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            # v2: crun's conversion of shares to weight, 1 + ((shares - 2) * 9999) / 262142
            if int(got) != 1 + ((want["cpu"]["shares"] - 2) * 9999) // 262142:
                return False
        elif int(got) != want["cpu"]["shares"]:
            return False
    if "memory" in want:
        got = read_counter(c.cgroup, "memory", "memory.limit_in_bytes", "memory.max")
        if got is not None and got.strip() != "max" and int(got) != want["memory"]["limit"]:
            return False
    return True


def add_capabilities(store: Containers, c: Container, caps: list[str]) -> bool:
    """Give a created (not yet started) container ``caps`` too, as ``docker run --cap-add`` (they hold inside
    its user namespace only), and a seccomp profile that lets them be used; True if anything changed."""
    from flex.runtime.oci import seccomp

    path = store.bundle(c.id) / "config.json"
    config = json.loads(path.read_text())
    have = config["process"]["capabilities"]
    missing = [cap for cap in caps if cap not in have["bounding"]]
    if not missing:
        return False
    for k in ("bounding", "effective", "permitted"):
        have[k] = have[k] + [cap for cap in missing if cap not in have[k]]
    if "seccomp" in config.get("linux", {}):
        config["linux"]["seccomp"] = seccomp.profile(caps=have["bounding"], docker=bool(c.options.get("docker")))
    write_atomic(path, json.dumps(config), mode=0o600, durable=False)
    return True
