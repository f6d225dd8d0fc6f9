"""Containers: records in the runtime DB, their bundles on disk, and every resource they hold.

A container is a row in ``containers`` plus FLEX_HOME/containers/<id>/ (config.json, the overlay's
upper/work dirs and mount point, the log, the exit status), an id range (root runner), a cgroup, a
network (network.py) and the OCI runtime's own state. Creation records the row first (state
``creating``, with the creating process's pid), so that a crash at any later step leaves something GC
can find and undo; ``remove`` and ``gc`` undo every step, each idempotently. GC and creation exclude
each other (a flock on FLEX_HOME/containers.lock: shared while a container is being created, exclusive
for GC, like containerd's GC lock): GC sweeps everything that is not recorded, and a creation's
resources exist before it is done.

Starting and waiting (stdio, terminals, the monitor that collects the exit status) live in tasks.py;
creation options in containers_create.py. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flex.atomic import write_atomic
from flex.errors import Conflict, FailedPrecondition, NotFound
from flex.pids import pid_alive
from flex.runtime.base.home import Home
from flex.runtime.base.lock import file_lock
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.base.names import name_digest
from flex.runtime.cgroups import cgroups
from flex.runtime.containers.rootfs import remove_in_namespace, unmount_rootfs
from flex.runtime.oci.crun import OCIRuntime
from flex.runtime.userns.idmap import IdMap, rootless_map
from flex.runtime.userns.idpool import IdPool
from flex.runtime.userns.keep_id import KeepId, parse_userns
from flex.runtime.userns.keeper import Keeper

if TYPE_CHECKING:
    from flex.runtime.network.networks import Networks

__all__ = ["Container", "Containers"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS containers (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image TEXT NOT NULL, state TEXT NOT NULL,
        created_at REAL NOT NULL, creator_pid INTEGER, pid INTEGER, monitor_pid INTEGER, exit_code INTEGER,
        started_at REAL, finished_at REAL, auto_remove INTEGER NOT NULL DEFAULT 0, options TEXT NOT NULL,
        idmap TEXT NOT NULL, cgroup TEXT, ports TEXT NOT NULL DEFAULT '[]')""",
]


@dataclass
class Container:
    id: str
    name: str
    image: str
    state: str  # creating | created | running | stopped
    created_at: float
    pid: int | None
    exit_code: int | None
    auto_remove: bool
    options: dict[str, Any]
    idmap: IdMap
    cgroup: str | None
    ports: list[dict[str, Any]]
    monitor_pid: int | None
    started_at: float | None
    finished_at: float | None
    creator_pid: int | None

    @classmethod
    def from_row(cls, row: Any) -> Container:
        m = json.loads(row["idmap"])
        return cls(id=row["id"], name=row["name"], image=row["image"], state=row["state"],
                   created_at=row["created_at"], pid=row["pid"], exit_code=row["exit_code"],
                   auto_remove=bool(row["auto_remove"]), options=json.loads(row["options"]),
                   idmap=IdMap(uids=tuple(tuple(x) for x in m["uids"]),
                               gids=tuple(tuple(x) for x in m["gids"])),
                   cgroup=row["cgroup"], ports=json.loads(row["ports"]), monitor_pid=row["monitor_pid"],
                   started_at=row["started_at"], finished_at=row["finished_at"], creator_pid=row["creator_pid"])

    @property
    def labels(self) -> dict[str, str]:
        """``--label K=V`` given at creation (kept with the options: no schema change for old homes)."""
        return dict(self.options.get("labels") or {})

    def matches(self, labels: Mapping[str, str | None]) -> bool:
        """Carries every key of ``labels`` with its value (None: any value), as docker's label filter."""
        own = self.labels
        return all(k in own and (v is None or own[k] == v) for k, v in labels.items())

    @property
    def keep_id(self) -> KeepId | None:
        """``--userns keep-id:uid=U,gid=G`` as created (rootless), else None."""
        return parse_userns(self.options.get("userns"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "image": self.image, "state": self.state, "labels": self.labels,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "pid": self.pid, "exit_code": self.exit_code, "auto_remove": self.auto_remove,
                "options": self.options, "userns": self.options.get("userns") or "",
                "uid_map": [list(x) for x in self.idmap.uids],
                "gid_map": [list(x) for x in self.idmap.gids], "cgroup": self.cgroup, "ports": self.ports}


class Containers:
    """The container store of one FLEX_HOME, for root or for the calling (rootless) user."""

    def __init__(self, home: Home, db: MetadataDB | None = None, *, rootless: bool | None = None) -> None:
        self.home = home
        self.db = db or MetadataDB(home.db_path)
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        self.db.ensure_schema("containers", 1, _SCHEMA)
        self.dir = home.sub("containers")
        if not self.rootless:
            # a container's root (a pool id) must traverse down to its rootfs mount: search, not read
            for d in (home.root, self.dir):
                if d.stat().st_mode & 0o011 != 0o011:
                    d.chmod(d.stat().st_mode | 0o011)
        self._keeper: Keeper | None = None
        # containers whose rootfs this process mounted (create): a start right after need not look again
        self.mounted_here: set[str] = set()
        self._idmap: IdMap | None = None
        self.pool = IdPool(self.db) if not self.rootless else None
        self._runtime = OCIRuntime(home.run / "oci")

    # --- rootless plumbing ---------------------------------------------------------------------------
    @property
    def runtime(self) -> OCIRuntime:
        """The OCI runtime; rootless, every call runs inside the user's namespaces (userns.py)."""
        if self.rootless and not self._runtime.prefix:
            assert self.keeper is not None
        return self._runtime

    @property
    def keeper(self) -> Keeper | None:
        if not self.rootless:
            return None
        if self._keeper is None:
            self._keeper = Keeper(self.home.run, self.rootless_idmap())
            self._runtime.prefix = self._keeper.prefix()
        return self._keeper

    def rootless_idmap(self) -> IdMap:
        if self._idmap is None:
            self._idmap = rootless_map()
        return self._idmap

    def bundle(self, cid: str) -> Path:
        return self.dir / cid

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Held (shared) from a creation's first record to its last file; GC waits for it."""
        with file_lock(self.home.root / "containers.lock", shared=True):
            yield

    # --- records -------------------------------------------------------------------------------------
    def all(self) -> list[Container]:
        rows = self.db.query("SELECT * FROM containers ORDER BY created_at")
        return [self.refresh(Container.from_row(r)) for r in rows]

    def with_labels(self, labels: Mapping[str, str | None]) -> list[Container]:
        """Every container carrying all of ``labels`` (as `ps --filter label=K=V`)."""
        return [c for c in self.all() if c.matches(labels)]

    def get(self, ref: str) -> Container:
        row = self.db.query_one("SELECT * FROM containers WHERE id = ? OR name = ?", (ref, ref))
        if row is None and len(ref) >= 4:
            rows = self.db.query("SELECT * FROM containers WHERE id LIKE ?", (ref + "%",))
            if len(rows) == 1:
                row = rows[0]
            elif len(rows) > 1:
                raise Conflict(f"container id prefix {ref!r} is ambiguous")
        if row is None:
            raise NotFound(f"no such container: {ref}", hint="list containers with `flex runtime ps -a`")
        return self.refresh(Container.from_row(row))

    def set_state(self, cid: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE containers SET {cols} WHERE id = ?", (*fields.values(), cid))

    def refresh(self, c: Container) -> Container:
        """Reconcile a record whose process died without anyone recording it (monitor killed, reboot)."""
        if c.state == "running" and c.pid is None:
            # started by `crun run`, which wrote PID 1 to the pid file rather than to us
            with contextlib.suppress(OSError, ValueError):
                c.pid = int((self.bundle(c.id) / "pid").read_text())
        if c.state == "running" and not pid_alive(c.pid) and not pid_alive(c.monitor_pid):
            code = self._exit_file_code(c.id)
            self._detach_network(c.id)
            self.set_state(c.id, state="stopped", exit_code=code, finished_at=time.time())
            c.state, c.exit_code, c.ports = "stopped", code, []
        return c

    def _exit_file_code(self, cid: str) -> int | None:
        try:
            return int((self.bundle(cid) / "exit").read_text())
        except (OSError, ValueError):
            return None

    def record_exit(self, cid: str, code: int, *, durable: bool = True) -> None:
        """Written by whoever waited for PID 1 (the CLI when attached, else the monitor). ``durable=False``
        for a --rm container its waiter removes next: after a machine crash GC removes it, exit code and all."""
        path = self.bundle(cid) / "exit"
        with contextlib.suppress(OSError):
            write_atomic(path, str(code), durable=durable)
        self._detach_network(cid)
        self.set_state(cid, state="stopped", exit_code=code, finished_at=time.time())

    def _detach_network(self, cid: str) -> None:
        """The run's port forwarders go with it (before the record says stopped: a `start` waits for that,
        and must not have its new forwarders stopped)."""
        row = self.db.query_one("SELECT options FROM containers WHERE id = ?", (cid,))
        if row is None or json.loads(row["options"]).get("net", "none") == "none":
            return
        networks = self.networks()
        if networks is not None:
            with contextlib.suppress(Exception):
                networks.detach(cid)
        self.set_state(cid, ports="[]")

    # --- signals, stop ---------------------------------------------------------------------------------
    def kill(self, ref: str, sig: str = "KILL") -> Container:
        c = self.get(ref)
        if c.state != "running":
            raise Conflict(f"container {c.name} is not running")
        name = sig.upper().removeprefix("SIG")
        if not name.isdigit() and not hasattr(signal, f"SIG{name}"):
            raise FailedPrecondition(f"unknown signal {sig!r}")
        self.runtime.kill(c.id, name)
        return c

    def wait(self, ref: str, timeout: float | None = None) -> Container:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            c = self.get(ref)
            if c.state != "running" or not pid_alive(c.pid):
                # PID 1 is gone and its waiter is recording the exit (the forwarders go first): wait for the
                # record, or for refresh() to write it once the waiter is gone too
                settle = time.monotonic() + 5
                while c.state == "running" and time.monotonic() < settle:
                    time.sleep(0.01)
                    c = self.get(ref)
                return c
            if deadline is not None and time.monotonic() > deadline:
                return c
            time.sleep(0.02)

    def stop(self, ref: str, timeout: float = 10.0) -> Container:
        c = self.get(ref)
        if c.state != "running":
            return c
        with contextlib.suppress(NotFound):
            self.runtime.kill(c.id, "TERM")
        c = self.wait(c.id, timeout)
        if c.state == "running":
            with contextlib.suppress(NotFound):
                self.runtime.kill(c.id, "KILL", all_processes=True)
            c = self.wait(c.id, 30)
        return c

    # --- removal and GC ---------------------------------------------------------------------------------
    def remove(self, ref: str, *, force: bool = False) -> None:
        c = self.get(ref)
        if c.state == "running":
            if not force:
                raise Conflict(f"container {c.name} is running", hint="stop it first, or use rm -f")
            with contextlib.suppress(NotFound):
                self.runtime.kill(c.id, "KILL", all_processes=True)
            self.wait(c.id, 30)
        self._teardown(c.id, c.cgroup, c.options.get("net", "none") != "none")

    def _teardown(self, cid: str, cgroup: str | None, networked: bool = True) -> None:
        """Undo every step of creation; each one safe to repeat and to find already undone."""
        self.mounted_here.discard(cid)
        self.runtime.delete(cid, force=True)
        if cgroup:
            cgroups.remove(cgroup)
        # network.py is only imported for containers that have a network (it is not cheap to import)
        if networked:
            with contextlib.suppress(Exception):
                self.networks().release(cid)
        bundle = self.bundle(cid)
        if bundle.exists() and self.keeper is not None and self.keeper.running_pid() is not None:
            with contextlib.suppress(FailedPrecondition):
                remove_in_namespace(bundle, self.keeper)
        if bundle.exists():
            unmount_rootfs(bundle, self.keeper)
            self._rmtree(bundle)
        if self.pool is not None:
            self.pool.release(cid)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (cid,))
            self._drop_leases(conn, [cid])

    def _drop_leases(self, conn: Any, cids: list[str]) -> None:
        """The container's hold on its image's snapshots (containers_create._record)."""
        for cid in cids:
            try:
                conn.execute("DELETE FROM lease_resources WHERE lease_id = ?", (f"container:{cid}",))
                conn.execute("DELETE FROM leases WHERE id = ?", (f"container:{cid}",))
            except sqlite3.OperationalError:
                return  # no image store tables in this home

    def _rmtree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        if path.exists() and self.keeper is not None:
            # files in the upper dir belong to subordinate ids: only root in the namespace may delete them
            with contextlib.suppress(FailedPrecondition):
                self.keeper.call(lambda: shutil.rmtree(path), "removing the container's files")

    def networks(self) -> Networks:
        from flex.runtime.network.networks import Networks  # not at import time: `runtime ps` needs none of it

        return Networks(self.home, self.db, rootless=self.rootless)

    def gc(self) -> list[str]:
        """Remove what belongs to no live container: half-created containers whose creator died,
        stopped --rm containers, bundles, OCI states, id ranges and cgroups without a record.
        Waits for creations in progress, and creations wait for it."""
        with file_lock(self.home.root / "containers.lock"):
            return self._gc()

    def _gc(self) -> list[str]:
        removed: list[str] = []
        known: set[str] = set()
        for row in self.db.query("SELECT * FROM containers"):
            c = self.refresh(Container.from_row(row))
            dead_creation = c.state == "creating" and not pid_alive(c.creator_pid)
            if dead_creation or (c.state == "stopped" and c.auto_remove):
                self._teardown(c.id, c.cgroup)
                removed.append(c.id)
            else:
                known.add(c.id)
        for cid in self._runtime.list_ids():  # (no keeper needed just to look)
            if cid not in known:
                self.runtime.delete(cid, force=True)
                removed.append(f"oci:{cid}")
        for d in self.dir.iterdir():
            if d.name not in known:
                unmount_rootfs(d, self.keeper)
                self._rmtree(d)
                removed.append(f"dir:{d.name}")
        try:
            held = [str(r["id"])[len("container:"):] for r in
                    self.db.query("SELECT id FROM leases WHERE id LIKE 'container:%'")]
        except sqlite3.OperationalError:
            held = []
        if orphans := [cid for cid in held if cid not in known]:
            with self.db.transaction() as conn:
                self._drop_leases(conn, orphans)
            removed += [f"lease:{cid}" for cid in orphans]
        if self.pool is not None:
            for owner in self.pool.owners() - known:
                self.pool.release(owner)
                removed.append(f"ids:{owner}")
        for parent in {c_parent for c_parent in self._cgroup_parents()}:
            for d in cgroups.cgroup_dirs(parent):
                for sub in d.iterdir():
                    if sub.is_dir() and sub.name not in known:
                        cgroups.remove(f"{parent}/{sub.name}")
                        removed.append(f"cgroup:{sub.name}")
        with contextlib.suppress(Exception):
            removed += [f"net:{x}" for x in self.networks().gc(known)]
        if not known:
            for parent in self._cgroup_parents():  # this home's own parent cgroup, now empty
                if cgroups.cgroup_dirs(parent):
                    cgroups.remove(parent)
        if self.rootless and not known and self._keeper_pid() is not None:
            # nothing mounted in it any more: let the user's namespace keeper go too
            assert self.keeper is not None
            self.keeper.stop()
            removed.append("userns-keeper")
        return sorted(set(removed))

    def _keeper_pid(self) -> int | None:
        return Keeper(self.home.run, self.rootless_idmap()).running_pid() if self.rootless else None

    def _cgroup_parents(self) -> list[str]:
        parent = self.cgroup_parent()
        return [parent] if parent else []

    def cgroup_parent(self) -> str | None:
        """Where this store's containers' cgroups go: /flex/<home-hash> for root, a delegated one rootless."""
        tag = name_digest(str(self.home.root)).hex()[:8]
        if not self.rootless:
            return f"/flex/{tag}"
        base = cgroups.rootless_parent(os.getuid())
        return f"{base}/flex-{tag}" if base else None
