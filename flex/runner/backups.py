"""Environment backups on the runner: what one holds, and running them gently (issue 17, points 3 and 6).

An environment backup is one flex.backup snapshot tagged ``env:<id>`` with up to three root entries:

    workspace   FLEX_HOME/runner/volumes/<env id>/      the workspace volume (cloned source, the user's work)
    docker      the inner Docker volume, where dockerd keeps images and containers (when the env has one)
    upper       the container's writable layer (overlay upper dir: apt-installed packages, whiteouts)

Owners are stored as seen inside the environment (the caller passes the id offset of its user namespace),
so a restore onto another runner's id range is right. A stopped environment's backup is exact; a running
one is read while it runs (flex.backup reads each file once, re-reads a file that changed meanwhile, and
marks it ``changed`` if it keeps changing).

Backups and restores run in a worker process (``python -m flex.runner.backups``) placed in its own cgroup
with a low CPU weight and I/O bandwidth limits on the device it reads, so environments on the runner keep
their share while a backup runs. Knows nothing of the control plane; reconcile hooks call these.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.errors import FlexError, InvalidArgument, NotFound, error_for_kind
from flex.runtime.cgroups import cgroups

__all__ = ["CPU_SHARES", "CPU_WEIGHT", "IO_BPS", "LOCK_WAIT", "Gentle", "environment_sources", "gentle", "run_worker",
           "tag"]

CPU_SHARES = 64  # v1: 1/16 of a default group's 1024
CPU_WEIGHT = 10  # v2: 1/10 of the default 100
IO_BPS = 200 << 20  # read and write bandwidth per device while backing up or restoring
PARENT = "flex/backups"
# how long a job waits for the repository while another holds it (one environment's prune, another's backup),
# unless the job says (``lock_wait``): each is minutes at most, and a stop's backup that waits is late where one
# that gave up would be missing
LOCK_WAIT = 15 * 60.0


def tag(env_id: str) -> str:
    return f"env:{env_id}"


def environment_sources(volume: Path, *, docker: Path | None = None, upper: Path | None = None) -> dict[str, Path]:
    """The directories one environment backup holds (those that exist)."""
    out = {"workspace": volume}
    if docker is not None and docker.is_dir():
        out["docker"] = docker
    if upper is not None and upper.is_dir():
        out["upper"] = upper
    return out


@dataclass(frozen=True)
class Gentle:
    cgroup: str | None
    devices: tuple[str, ...] = ()
    cpu: str = ""  # what the cgroup's cpu.shares / cpu.weight reads back
    io: str = ""  # what its blkio.throttle.read_bps_device / io.max reads back


def _disk(path: Path) -> str | None:
    """MAJ:MIN of the whole disk holding ``path`` (block throttling applies to disks, not partitions)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysdev = Path("/sys/dev/block") / dev
    if not sysdev.exists():
        return None  # overlay, tmpfs, nfs: nothing to throttle at the block layer
    if (sysdev / "partition").exists():
        with contextlib.suppress(OSError):
            return (sysdev.resolve().parent / "dev").read_text().strip()
    return dev


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


def gentle(paths: list[Path], *, io_bps: int = IO_BPS) -> Gentle:
    """Move this process into ``flex/backups/<pid>`` with low CPU weight and I/O limits on the disks of
    ``paths``. Without the right to (a rootless runner nobody delegated a cgroup to) it runs unlimited."""
    rel = f"{PARENT}/{os.getpid()}"
    disks = tuple(sorted({dk for p in paths if p.exists() and (dk := _disk(p)) is not None}))
    try:
        if cgroups.is_v2():
            d = cgroups.ROOT / rel
            d.mkdir(parents=True, exist_ok=True)
            _write(d.parent / "cgroup.subtree_control", "+cpu +io")
            _write(d / "cpu.weight", str(CPU_WEIGHT))
            for disk in disks:
                _write(d / "io.max", f"{disk} rbps={io_bps} wbps={io_bps}")
            ok = _write(d / "cgroup.procs", str(os.getpid()))
        else:
            cgroups.ensure_parent(rel)
            ok = _write(cgroups.ROOT / "cpu" / rel / "cpu.shares", str(CPU_SHARES))
            blk = cgroups.ROOT / "blkio" / rel
            for disk in disks:
                _write(blk / "blkio.throttle.read_bps_device", f"{disk} {io_bps}")
                _write(blk / "blkio.throttle.write_bps_device", f"{disk} {io_bps}")
            for h in ("cpu", "blkio"):
                ok = _write(cgroups.ROOT / h / rel / "cgroup.procs", str(os.getpid())) and ok
    except OSError:
        return Gentle(None)
    if not ok:
        return Gentle(None)
    cpu = cgroups.read_counter(rel, "cpu", "cpu.shares", "cpu.weight") or ""
    io = cgroups.read_counter(rel, "blkio", "blkio.throttle.read_bps_device", "io.max") or ""
    return Gentle(rel, disks, cpu.strip(), io.strip())


def _job(job: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from flex.backup import Repository, backup, lock, open_store, restore
    from flex.backup.nodes import id_rows

    password = Path(job["password_file"]).read_bytes().strip()
    os.environ.update(job.get("store_env") or {})  # a shared S3 store's keys (issue 17.5): this process only
    store = open_store(job.get("repo"))
    paths = [Path(p) for p in job.get("sources", {}).values()] + ([Path(job["target"]).parent] if "target" in job
                                                                   else [])
    g = gentle(paths, io_bps=int(job.get("io_bps", IO_BPS)))
    wait = float(job.get("lock_wait", LOCK_WAIT))
    out: dict[str, Any] = {"cgroup": g.cgroup, "devices": list(g.devices), "cpu": g.cpu, "io": g.io,
                           "proc_cgroup": Path("/proc/self/cgroup").read_text()}
    if job["op"] == "backup":
        id_map = (id_rows(rows=job["id_map"][0]), id_rows(rows=job["id_map"][1])) if job.get("id_map") else None
        repo = Repository.open_or_init(store, password)
        parents = [s for s in repo.snapshots() if tag(job["env_id"]) in s.tags]
        with lock(repo, wait=wait):
            snap, summary = backup(repo, {k: Path(v) for k, v in job["sources"].items()},
                                   id_offset=int(job.get("id_offset", 0)), parent=parents[-1] if parents else None,
                                   tags=[tag(job["env_id"])], meta=job.get("meta") or {}, id_map=id_map)
        out.update(snapshot=snap.to_json(), summary=asdict(summary))
    elif job["op"] == "restore":
        repo = Repository.open(store, password)
        if "snapshot" in job:
            snap = repo.find_snapshot(job["snapshot"])
        else:  # by the control plane's backup id, kept in the snapshot's meta
            found = [s for s in repo.snapshots() if s.meta.get("backup") == job["backup"]]
            if not found:
                raise NotFound(f"backup {job['backup']} is not in the repository {store.location}",
                               hint="restore on the runner that made it, or give the runners a shared store")
            snap = found[-1]
        summary_r = restore(repo, snap, Path(job["target"]), id_offset=int(job.get("id_offset", 0)),
                            overlay_xattrs=job.get("overlay_xattrs"))
        out.update(snapshot=snap.to_json(), summary=asdict(summary_r))
    elif job["op"] == "list":  # the control plane's backup ids of the environment's snapshots
        repo = Repository.open(store, password)
        out.update(backups=[s.meta.get("backup") for s in repo.snapshots() if tag(job["env_id"]) in s.tags])
    elif job["op"] == "retain":  # keep the newest keep_last backups of the environment, prune the rest
        from flex.backup import Policy, apply_policy, prune

        repo = Repository.open(store, password)
        with lock(repo, exclusive=True, wait=wait):
            mine = [s for s in repo.snapshots() if tag(job["env_id"]) in s.tags]
            gone = set(job.get("gone") or ())  # removed through the API: their snapshots go too
            _, remove = apply_policy([s for s in mine if s.meta.get("backup") not in gone],
                                     Policy(keep_last=int(job["keep_last"])))
            remove += [s for s in mine if s.meta.get("backup") in gone]
            for s in remove:
                repo.forget(s)
            freed = prune(repo).bytes_freed if remove else 0
        out.update(removed=[s.meta.get("backup") for s in remove], bytes_freed=freed)
    elif job["op"] == "forget":  # backups of deleted environments whose time is up (issue 17)
        from flex.backup import prune

        ids = set(job.get("backups") or ())
        try:
            repo = Repository.open(store, password)
        except NotFound:  # no repository: nothing of them is left in it
            return {**out, "forgotten": sorted(ids), "bytes_freed": 0}
        with lock(repo, exclusive=True, wait=wait):
            remove = [s for s in repo.snapshots() if s.meta.get("backup") in ids]
            for s in remove:
                repo.forget(s)
            freed = prune(repo).bytes_freed if remove else 0
        out.update(forgotten=sorted(ids), bytes_freed=freed)  # absent ones too: they are out of it as well
    else:
        raise InvalidArgument(f"unknown backup job {job['op']!r}")
    repo.close()
    return out


def run_worker(job: Mapping[str, Any], *, timeout: float | None = None, prefix: list[str] | None = None
               ) -> dict[str, Any]:
    """Run a backup or restore job in a gentle worker process (``prefix``: e.g. nsenter into a rootless
    runner's user namespace); its error comes back as the same kind."""
    proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "flex.runner.backups"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(json.dumps(dict(job)), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        cgroups.remove(f"{PARENT}/{proc.pid}")  # empty now: the worker has exited
    try:
        reply: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise FlexError(f"backup worker failed (exit {proc.returncode}): {stderr.strip()[-500:]}") from None
    if "error" in reply:
        e = reply["error"]
        raise error_for_kind(e.get("kind", "Error"), e.get("message", ""), hint=e.get("hint"))
    return reply


def _main() -> None:  # pragma: no cover - runs as the worker process
    try:
        reply = _job(json.loads(sys.stdin.read()))
    except FlexError as err:
        reply = {"error": err.to_dict()}
    print(json.dumps(reply))


if __name__ == "__main__":
    _main()
