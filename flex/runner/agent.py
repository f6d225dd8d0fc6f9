"""`flex runner run`: the composition root. One process per machine, threads:

    watcher     list this runner's environments, then watch from the list's resourceVersion (410 Gone:
                list again); every ``resync`` seconds a full list again, so a missed event is never fatal;
                each environment id (and each local container's environment) goes on the queue
    heartbeat   every ``heartbeat`` seconds; the machine's capacity whenever it changes, and DiskPressure
                when its free disk goes under (or back over) ``min_free_disk``
    tunnel      the outbound WebSocket to the control plane that exec and other access streams ride on
                (flex/runner/access/)
    expirer     every ``resync`` seconds: forgets the expired backups of deleted environments (issue 17)
    workers     take an id from the keyed queue and reconcile it (one reconcile per environment at a time);
                a failure requeues it with per-environment exponential backoff and jitter
Status of the agent itself goes to FLEX_HOME/runner/agent.json for `flex runner status`. SIGTERM (or
SIGINT) stops the loop after the reconciles in flight; containers are not our children and keep running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.api import Gone, RunnerCapacity, RunnerHeartbeat, WatchEvent
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.errors import Conflict, FlexError, Unavailable
from flex.runner.capacity import id_ranges, machine_capacity
from flex.runner.credential import Credential, runner_dir
from flex.runner.disk import DEFAULT_MIN_FREE, disk_free
from flex.runner.machine import ENV_LABEL, Machine
from flex.runner.moves import refresh_shared
from flex.runner.queue import WorkQueue
from flex.runner.reconcile import Ctx, Retry, reconcile

__all__ = ["Agent", "AgentOptions", "agent_status_path", "news"]

log = logging.getLogger("flex.runner")


def agent_status_path(home: Path) -> Path:
    return home / "runner" / "agent.json"


def news(seen: dict[str, tuple[int, bool]], ev: WatchEvent) -> bool:
    """Whether a watch event asks for a reconcile, remembering in ``seen`` each environment's (generation,
    deleting). A MODIFIED event that changed neither is a status write, and only this runner writes status:
    its own, which must not queue the environment again (that would undo the failure backoff)."""
    meta = ev.object.metadata
    spec_side = (meta.generation, bool(meta.deleting))
    if ev.type == "MODIFIED" and seen.get(meta.id) == spec_side:
        return False
    seen[meta.id] = spec_side
    return True


@dataclass
class AgentOptions:
    workers: int = 2
    resync: float = 60.0
    heartbeat: float = 10.0
    watch_timeout: float = 30.0
    max_builds: int = 1  # image pulls and builds at once, shared by every worker
    min_free_disk: int = DEFAULT_MIN_FREE  # less free disk than this: DiskPressure, no new environments here
    idle_timeout: int | None = None  # declared to the control plane: the default for specs without idleTimeout


@dataclass
class _EnvInfo:
    phase: str | None = None
    last_reconcile: float | None = None
    error: str | None = None
    failures: int = 0


@dataclass
class _State:
    started_at: float = field(default_factory=time.time)
    last_heartbeat: float | None = None
    heartbeat_error: str | None = None
    watching_since: int | None = None
    disk_free: int | None = None
    disk_pressure: bool = False
    last_list: float | None = None
    envs: dict[str, _EnvInfo] = field(default_factory=dict)


class Agent:
    def __init__(self, home: Path, cred: Credential, opts: AgentOptions | None = None) -> None:
        self.home, self.cred, self.opts = home, cred, opts or AgentOptions()
        self.stopping = threading.Event()
        self.queue = WorkQueue()
        self.state = _State()
        self._lock = threading.Lock()
        self._local = threading.local()
        self.builds = threading.BoundedSemaphore(self.opts.max_builds)
        runner_dir(home)

    # --- pieces ----------------------------------------------------------------------------------------
    def _client(self, timeout: float = 30.0) -> FlexClient:
        return FlexClient(self.cred.url, self.cred.credential, timeout=timeout)

    def _ctx(self) -> Ctx:
        ctx: Ctx | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = Ctx(client=self._client(), runner_id=self.cred.runner_id, kind=self.cred.kind, home=self.home,
                      machine=Machine(self.home), builds=self.builds)
            self._local.ctx = ctx
        return ctx

    def write_status(self) -> None:
        with self._lock:
            s = self.state
            data: dict[str, Any] = {
                "pid": os.getpid(), "runnerId": self.cred.runner_id, "name": self.cred.name,
                "kind": self.cred.kind, "url": self.cred.url, "startedAt": s.started_at,
                "lastHeartbeat": s.last_heartbeat, "heartbeatError": s.heartbeat_error,
                "watchingFrom": s.watching_since, "lastList": s.last_list, "queued": len(self.queue),
                "diskFree": s.disk_free, "diskPressure": s.disk_pressure,
                "environments": {k: {"phase": v.phase, "lastReconcile": v.last_reconcile, "error": v.error,
                                     "failures": v.failures} for k, v in sorted(s.envs.items())},
            }
        write_atomic(agent_status_path(self.home), json.dumps(data, indent=2) + "\n", mode=0o600, durable=False)

    # --- threads ---------------------------------------------------------------------------------------
    def _relist(self, client: FlexClient) -> int:
        ids: list[str] = []
        cont: str | None = None
        while True:
            page = client.runner_environments(self.cred.runner_id, cont=cont)
            ids += [e.metadata.id for e in page.items]
            cont = page.metadata.continue_
            if not cont:
                rv = page.metadata.resource_version
                break
        # local containers (and volumes: a move rolled back mid-restore has no container yet) of environments
        # the list no longer has: reconcile tears them down
        local = {c.labels.get(ENV_LABEL, "") for c in self._ctx().machine.containers.all()} - {""}
        volumes = self.home / "runner" / "volumes"
        local |= {p.name for p in volumes.iterdir() if p.name.startswith("env_")} if volumes.is_dir() else set()
        for env_id in [*ids, *sorted(local - set(ids))]:
            self.queue.add(env_id)
        with self._lock:
            self.state.last_list = time.time()
            for gone in set(self.state.envs) - set(ids) - local:
                del self.state.envs[gone]
        log.info("listed %d environment(s) at resourceVersion %d", len(ids), rv)
        return rv

    def watcher(self) -> None:
        delay = 0.5
        rv: int | None = None
        next_resync = 0.0
        # (generation, deleting) last queued per environment: a MODIFIED event that changed neither is a status
        # write (ours: only this runner writes status), and queueing it would undo the failure backoff
        seen: dict[str, tuple[int, bool]] = {}
        with self._client(timeout=self.opts.watch_timeout + 30) as client:
            while not self.stopping.is_set():
                try:
                    if rv is None or time.monotonic() >= next_resync:
                        rv = self._relist(client)
                        seen.clear()
                        next_resync = time.monotonic() + self.opts.resync
                    with self._lock:
                        self.state.watching_since = rv
                    timeout = max(1.0, min(self.opts.watch_timeout, next_resync - time.monotonic()))
                    for ev in client.watch_runner_environments(self.cred.runner_id, rv, timeout=timeout):
                        rv = max(rv, ev.object.metadata.resource_version)
                        if news(seen, ev):
                            self.queue.add(ev.object.metadata.id)
                        if self.stopping.is_set():
                            break
                    delay = 0.5
                except Gone:
                    log.info("watch from resourceVersion %s is too old: listing again", rv)
                    rv = None
                except FlexError as err:
                    log.warning("watch: %s; retrying in %.1f s", err, delay)
                    rv = None
                    self.stopping.wait(delay)
                    delay = min(delay * 2, 30.0)

    def heartbeater(self) -> None:
        sent: RunnerCapacity | None = None
        sent_pressure: bool | None = None
        sent_repo: str | None = None
        repo: str | None = None
        rootless, ranges = id_ranges()
        with self._client(timeout=10) as client:
            while not self.stopping.is_set():
                if repo is None:  # once: the shared backup repository, if the control plane has one (17.5)
                    try:
                        repo = refresh_shared(client, self.cred.runner_id, self.home)
                    except FlexError as err:
                        log.warning("reading the shared backup repository: %s", err)
                cap = machine_capacity(self.home)
                free = disk_free(self.home)
                pressure = free < self.opts.min_free_disk
                if pressure and not self.state.disk_pressure:
                    log.warning("DiskPressure: %.1f GiB free, under --min-free-disk %.1f GiB: the control plane "
                                "places no new environments here", free / 2**30, self.opts.min_free_disk / 2**30)
                elif self.state.disk_pressure and not pressure:
                    log.info("DiskPressure over: %.1f GiB free", free / 2**30)
                with self._lock:
                    self.state.disk_free, self.state.disk_pressure = free, pressure
                try:
                    news = cap != sent  # with the first heartbeat too: an upgraded runner may tell more
                    beat = RunnerHeartbeat(capacity=cap if news else None, rootless=rootless if news else None,
                                           id_ranges=ranges if news else None,
                                           disk_pressure=pressure if pressure != sent_pressure else None,
                                           backup_repository=repo if repo != sent_repo else None)
                    if news:
                        beat.idle_timeout = self.opts.idle_timeout  # None too: "no default" clears an old one
                    client.heartbeat(self.cred.runner_id, beat)
                    sent, sent_pressure, sent_repo = cap, pressure, repo
                    with self._lock:
                        self.state.last_heartbeat, self.state.heartbeat_error = time.time(), None
                except FlexError as err:
                    log.warning("heartbeat: %s", err)
                    with self._lock:
                        self.state.heartbeat_error = str(err)
                self.write_status()
                self.stopping.wait(self.opts.heartbeat)

    def expirer(self) -> None:
        """Every resync: forget the expired backups of deleted environments in our repository (issue 17)."""
        from flex.runner.backup_hooks import forget_expired

        with self._client(timeout=30) as client:
            while not self.stopping.wait(self.opts.resync):
                try:
                    forget_expired(client, self.cred.runner_id, self.home, self._ctx().machine)
                except FlexError as err:
                    log.warning("forgetting expired backups: %s", err)

    def worker(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self._reconcile(key)
            finally:
                self.queue.done(key)

    def _reconcile(self, env_id: str) -> None:
        rid = os.urandom(3).hex()
        info = _EnvInfo()
        try:
            result = reconcile(self._ctx(), env_id)
        except (Retry, Conflict, Unavailable) as err:
            delay = self.queue.failed(env_id)
            log.info("reconcile %s %s: %s; again in %.1f s", rid, env_id, err, delay)
            info.error = str(err)
        except Exception as err:  # a bug or the unexpected: back off, never die
            delay = self.queue.failed(env_id)
            log.exception("reconcile %s %s failed; again in %.1f s", rid, env_id, delay)
            info.error = f"{type(err).__name__}: {err}"
        else:
            self.queue.forget(env_id)
            if result.requeue_after is not None:
                self.queue.add_after(env_id, result.requeue_after)
            info.phase = result.phase
            log.info("reconcile %s %s: %s%s", rid, env_id, result.phase or "nothing to do",
                     f" ({result.message})" if result.message else "")
        info.last_reconcile, info.failures = time.time(), self.queue.failures(env_id)
        with self._lock:
            if info.phase == "deleted" or (info.phase is None and info.error is None):
                self.state.envs.pop(env_id, None)
            else:
                old = self.state.envs.get(env_id)
                if info.phase is None and old is not None:
                    info.phase = old.phase
                self.state.envs[env_id] = info
        self.write_status()

    def _tunnel(self) -> None:
        from flex.runner.access import ExecService, LogService, PortService, TunnelClient

        execs = ExecService(self.home, self.cred)
        from flex.runner.access.ssh import SSHService

        ssh = SSHService(execs, self.home)
        handlers = {"exec": execs.serve, "logs": LogService(execs).serve, "tcp": PortService(execs).serve,
                    "ssh": ssh.serve, "ssh-hostkey": ssh.serve_hostkey}
        TunnelClient(self.home, self.cred, handlers).run(self.stopping)

    # --- running ---------------------------------------------------------------------------------------
    def run(self) -> int:
        def stop(signum: int, _frame: object) -> None:
            log.info("%s: stopping (environments keep running)", signal.Signals(signum).name)
            self.stopping.set()
            self.queue.close()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("runner %s (%s, %s) for %s", self.cred.name, self.cred.runner_id, self.cred.kind, self.cred.url)
        self.write_status()
        threads = [threading.Thread(target=self.watcher, name="watcher", daemon=True),
                   threading.Thread(target=self.heartbeater, name="heartbeat", daemon=True),
                   threading.Thread(target=self._tunnel, name="tunnel", daemon=True),
                   threading.Thread(target=self.expirer, name="expirer", daemon=True)]
        workers = [threading.Thread(target=self.worker, name=f"worker-{i}", daemon=True)
                   for i in range(self.opts.workers)]
        for t in [*threads, *workers]:
            t.start()
        while not self.stopping.is_set():
            self.stopping.wait(1.0)
        for t in workers:  # finish the reconciles in flight; the watch and heartbeat just end with us
            t.join(60)
        agent_status_path(self.home).unlink(missing_ok=True)
        log.info("stopped")
        return 0
