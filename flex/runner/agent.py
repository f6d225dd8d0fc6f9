"""`flex runner run`: the composition root. One process per machine, threads:

    watcher     list this runner's environments, then watch from the list's resourceVersion (410 Gone:
                list again); every ``resync`` seconds a full list again, so a missed event is never fatal;
                each environment id (and each local container's environment) goes on the queue
    heartbeat   every ``heartbeat`` seconds; the machine's capacity whenever it changes
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

from flex.api import Gone, RunnerCapacity, RunnerHeartbeat
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.errors import Conflict, FlexError, Unavailable
from flex.runner.capacity import machine_capacity
from flex.runner.credential import Credential, runner_dir
from flex.runner.machine import ENV_LABEL, Machine
from flex.runner.queue import WorkQueue
from flex.runner.reconcile import Ctx, Retry, reconcile

__all__ = ["Agent", "AgentOptions", "agent_status_path"]

log = logging.getLogger("flex.runner")


def agent_status_path(home: Path) -> Path:
    return home / "runner" / "agent.json"


@dataclass
class AgentOptions:
    workers: int = 2
    resync: float = 60.0
    heartbeat: float = 10.0
    watch_timeout: float = 30.0


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
        runner_dir(home)

    # --- pieces ----------------------------------------------------------------------------------------
    def _client(self, timeout: float = 30.0) -> FlexClient:
        return FlexClient(self.cred.url, self.cred.credential, timeout=timeout)

    def _ctx(self) -> Ctx:
        ctx: Ctx | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = Ctx(client=self._client(), runner_id=self.cred.runner_id, kind=self.cred.kind, home=self.home,
                      machine=Machine(self.home))
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
        # local containers of environments the list no longer has: reconcile tears them down
        local = {c.labels.get(ENV_LABEL, "") for c in self._ctx().machine.containers.all()} - {""}
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
        with self._client(timeout=self.opts.watch_timeout + 30) as client:
            while not self.stopping.is_set():
                try:
                    if rv is None or time.monotonic() >= next_resync:
                        rv = self._relist(client)
                        next_resync = time.monotonic() + self.opts.resync
                    with self._lock:
                        self.state.watching_since = rv
                    timeout = max(1.0, min(self.opts.watch_timeout, next_resync - time.monotonic()))
                    for ev in client.watch_runner_environments(self.cred.runner_id, rv, timeout=timeout):
                        rv = max(rv, ev.object.metadata.resource_version)
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
        with self._client(timeout=10) as client:
            while not self.stopping.is_set():
                cap = machine_capacity(self.home)
                try:
                    client.heartbeat(self.cred.runner_id, RunnerHeartbeat(capacity=cap if cap != sent else None))
                    sent = cap
                    with self._lock:
                        self.state.last_heartbeat, self.state.heartbeat_error = time.time(), None
                except FlexError as err:
                    log.warning("heartbeat: %s", err)
                    with self._lock:
                        self.state.heartbeat_error = str(err)
                self.write_status()
                self.stopping.wait(self.opts.heartbeat)

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
            log.info("reconcile %s %s: %s", rid, env_id, result.phase or "nothing to do")
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
                   threading.Thread(target=self.heartbeater, name="heartbeat", daemon=True)]
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
