"""The composition root of the control plane: create_app(settings) wires database, store, watch hub and routes.

Nothing happens at import time. create_app() opens the database, runs migrations and, on first start,
creates the admin (its token goes to ``settings.admin_token_file``, mode 0600). The lifespan starts the
watch tailer and the sweeper (offline runners, pending placements, event-log compaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flex.controlplane import errors, ui
from flex.controlplane.auth import CredentialCache, FailureLimiter, ensure_admin
from flex.controlplane.backup_repository import ensure_password
from flex.controlplane.backups import Backups
from flex.controlplane.config import Settings
from flex.controlplane.db import Database, libpq_url
from flex.controlplane.errors import TooLarge, problem_response
from flex.controlplane.idle import IdleWatch
from flex.controlplane.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from flex.controlplane.moves import Moves
from flex.controlplane.preview import proxy as preview
from flex.controlplane.preview import signin as preview_signin
from flex.controlplane.proxy import ForwardedHeaders, parse_networks
from flex.controlplane.routes import (
    access,
    backups,
    environments,
    events,
    policy,
    replicas,
    runners,
    secrets,
    tokens,
    users,
)
from flex.controlplane.routes import ssh as ssh_routes
from flex.controlplane.routes.deps import Admin, ControlPlane
from flex.controlplane.runners import Runners
from flex.controlplane.secret_key import SecretKey
from flex.controlplane.secrets import Secrets
from flex.controlplane.store import Store
from flex.controlplane.tunnel import Tunnels
from flex.controlplane.tunnel.peers import Peers
from flex.controlplane.tunnel.registry import Registry
from flex.controlplane.tunnel.replica_auth import ReplicaKey
from flex.controlplane.watch import Hub

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger("flex.controlplane")


class BodyLimit:
    """413 for request bodies over the limit, whether announced by Content-Length or streamed in chunks."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/p/"):  # previews stream, flow-controlled
            await self.app(scope, receive, send)
            return
        too_large = TooLarge(f"the request body is larger than {self.limit} bytes",
                             hint="send less at once")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await problem_response(too_large, scope.get("path"))(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and length is None:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await problem_response(too_large, scope.get("path"))(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _replica_heartbeat(registry: Registry, tunnels: Tunnels, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), registry.heartbeat)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(registry.beat, tunnels.held())
        except Exception:  # a database hiccup: the next beat comes before the others give up on us
            log.warning("replica heartbeat failed", exc_info=True)


async def _sweep(cp: ControlPlane, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), cp.settings.sweep_interval)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(cp.runners.sweep)
            await asyncio.to_thread(cp.store.compact, cp.settings.event_retention)
            await asyncio.to_thread(Backups(cp.store).schedule_due)  # spec.backup.schedule (issue 17)
            await asyncio.to_thread(Backups(cp.store).drop_unreachable)  # deleted environments' (issue 17)
            await asyncio.to_thread(Moves(cp.store, shared=bool(cp.settings.backup_repository)).sweep)  # 17.5
        except Exception:  # a database hiccup: try again next round
            log.warning("sweep failed", exc_info=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    trusted_proxies = parse_networks(settings.proxy_trusted_origins)
    key = SecretKey.ensure(settings.secret_key_path)  # before the database: a bad key file fails fast
    ensure_password(settings)  # issue 17.5: the shared backup repository's, likewise
    db = Database.open(settings)
    db.migrate()
    created_admin = ensure_admin(db, settings.admin_token_file)
    holder: dict[str, Hub] = {}

    def on_commit() -> None:
        if "hub" in holder:
            holder["hub"].wake()

    store = Store(db, on_commit)
    store.deleted_backup_retention = settings.deleted_backup_retention
    hub = Hub(store, listen_url=libpq_url(settings.database_url) if db.is_postgres else None,
              queue_size=settings.watch_queue, keepalive=settings.watch_keepalive)
    holder["hub"] = hub
    fleet = Runners(db, settings.heartbeat_timeout, on_commit, store.forget_hint, store.writer,
                    credential_ttl=settings.runner_credential_ttl)
    cp = ControlPlane(settings, db, store, fleet, hub,
                      FailureLimiter(settings.auth_failures_per_minute),
                      CredentialCache(settings.credential_cache_ttl), Secrets(db, key))

    registry = Registry(db, settings.advertise, settings.replica_heartbeat)
    replica_key = ReplicaKey(key)
    peers = Peers(replica_key, registry.id)
    tunnels = Tunnels(registry, peers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        await asyncio.to_thread(registry.beat)
        stop = asyncio.Event()
        sweeper = asyncio.create_task(_sweep(cp, stop), name="flex-sweep")
        idler = asyncio.create_task(idle.run(stop), name="flex-idle-stop")
        beater = asyncio.create_task(_replica_heartbeat(registry, tunnels, stop), name="flex-replica-heartbeat")
        try:
            yield
        finally:
            stop.set()  # let a sweep in progress finish: its thread holds a pooled connection
            await sweeper
            await idler
            await beater
            await peers.close()
            with contextlib.suppress(Exception):  # else the others give up on us after the expiry
                await asyncio.to_thread(registry.retire)
            await hub.stop()
            db.dispose()

    app = FastAPI(title="flex control plane", version="1", lifespan=lifespan,
                  description="Declarative developer environments: desired state, runners, watches. See docs/api.md.")
    app.state.cp = cp
    app.state.created_admin = created_admin
    app.state.tunnels = tunnels
    app.state.replica_key = replica_key
    app.state.idle = idle = IdleWatch(db, store, settings.idle_timeout, elsewhere=registry.held_elsewhere)
    errors.install(app)
    metrics = Metrics()
    get_route = next(r for r in environments.router.routes
                     if isinstance(r, APIRoute) and r.path.endswith("/{name}") and "GET" in (r.methods or ()))
    app.add_middleware(environments.GetShortcut, route=get_route)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ForwardedHeaders, trusted=trusted_proxies)  # outermost: every layer sees the real client
    for module in (environments, backups, runners, users, tokens, events, policy, secrets):
        app.include_router(module.router)
    app.include_router(runners.join_router)
    app.include_router(backups.everywhere)
    app.include_router(access.router)
    app.include_router(ssh_routes.router)
    app.include_router(replicas.router, include_in_schema=False)  # internal: replica to replica
    app.include_router(preview_signin.router)
    app.router.routes += [Route("/p/{rest:path}", preview.Preview(), include_in_schema=False),
                          WebSocketRoute("/p/{rest:path}", preview.Preview())]
    ui.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: errors.PROBLEM_RESPONSES[409] | {"description": "not ready"}})
    async def readyz() -> Any:
        try:
            await asyncio.to_thread(db.ping)
        except Exception as err:
            from flex.errors import Unavailable

            return problem_response(Unavailable(f"database unreachable: {type(err).__name__}"), "/readyz")
        if hub.listen_url and not hub.listening:
            from flex.errors import Unavailable

            return problem_response(Unavailable("not listening for changes from other replicas yet"), "/readyz")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             responses={**errors.PROBLEM_RESPONSES,
                        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format; every name starts with flex_"}})
    async def metrics_route(who: Admin) -> PlainTextResponse:
        """Prometheus metrics, for an admin token (a read-only one is enough: give Prometheus that)."""
        environments, fleet_states = await asyncio.to_thread(_counts, db)
        body = metrics.render(watchers=len(hub.subscribers), environments=environments, runners=fleet_states)
        return PlainTextResponse(body, media_type=CONTENT_TYPE)

    return app


def _counts(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """Environments by phase and runners by state, every known value present (0 when none)."""
    from sqlalchemy import func, select

    from flex.api import PHASES
    from flex.controlplane.models import EnvironmentRow, RunnerRow

    phase = EnvironmentRow.__table__.c.status["phase"].as_string()  # type: ignore[attr-defined]
    environments = dict.fromkeys(PHASES, 0)
    runner_states = {"ready": 0, "offline": 0}
    with db.read() as s:
        for value, n in s.execute(select(phase, func.count()).group_by(phase)).all():
            environments[value or "pending"] = environments.get(value or "pending", 0) + int(n)
        state = RunnerRow.__table__.c.state  # type: ignore[attr-defined]
        for value, n in s.execute(select(state, func.count()).group_by(state)).all():
            runner_states[str(value)] = int(n)
    return environments, runner_states
