"""What every route shares: the process's ControlPlane, who is calling (and may they), and SSE watch answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flex.api.errors import Gone
from flex.controlplane.auth import CredentialCache, FailureLimiter, Principal, authenticate, authenticate_cached
from flex.controlplane.config import Settings
from flex.controlplane.db import Database
from flex.controlplane.errors import problem_body
from flex.controlplane.runners import Runners
from flex.controlplane.secrets import Secrets
from flex.controlplane.store import Store
from flex.controlplane.watch import Hub
from flex.errors import FlexError, PermissionDenied, Unauthenticated

__all__ = ["Admin", "ControlPlane", "Cp", "RunnerCaller", "User", "bearer", "client_address", "get_cp", "user",
           "watch_response"]


@dataclass
class ControlPlane:
    settings: Settings
    db: Database
    store: Store
    runners: Runners
    hub: Hub
    limiter: FailureLimiter
    credentials: CredentialCache
    secrets: Secrets


# The dependencies are async on purpose: FastAPI runs a sync one in the thread pool, and four thread hops per
# request (with the GIL hand-offs they cost) were most of a GET's time. Only a cache miss goes to a thread.
async def get_cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


Cp = Annotated[ControlPlane, Depends(get_cp)]
_bearer = HTTPBearer(auto_error=False, description="a user token (flexu_...) or a runner credential (flexr_...)")
bearer = _bearer


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _principal(request: Request, creds: Bearer) -> Principal:
    cp: ControlPlane = request.app.state.cp
    addr = client_address(request)
    cp.limiter.check(addr)
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthenticated("no credentials", hint="log in: `flex login --server URL`")
    try:
        who = authenticate_cached(creds.credentials, cp.credentials)
        if who is None:
            who = await asyncio.to_thread(authenticate, cp.db, creds.credentials, cp.credentials)
        return who
    except Unauthenticated:
        cp.limiter.failed(addr)
        raise


# Each level below calls the one above directly rather than through Depends: every dependency FastAPI
# solves costs about as much as a whole plain handler (issue 12.7).
async def _user(request: Request, creds: Bearer) -> Principal:
    who = await _principal(request, creds)
    if who.kind != "user":
        raise PermissionDenied("runner credentials work only on runner endpoints")
    need = "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"
    if need not in who.scopes:
        raise PermissionDenied(f"this token lacks the {need!r} scope", hint="create a token with that scope")
    return who


async def _admin(request: Request, creds: Bearer) -> Principal:
    who = await _user(request, creds)
    if not who.admin:
        raise PermissionDenied("only an admin may do this")
    return who


async def _runner(request: Request, creds: Bearer) -> Principal:
    who = await _principal(request, creds)
    if who.kind != "runner":
        raise PermissionDenied("this endpoint is for runners; use a runner credential")
    return who


Caller = Annotated[Principal, Depends(_principal)]
User = Annotated[Principal, Depends(_user)]
user = _user  # for GetShortcut, which calls what the User dependency runs
Admin = Annotated[Principal, Depends(_admin)]
RunnerCaller = Annotated[Principal, Depends(_runner)]


async def watch_response(cp: ControlPlane, request: Request, *, since: int | None, owner: str | None,
                         runner_id: str | None, timeout: float | None) -> StreamingResponse:
    """A ``text/event-stream`` of ADDED/MODIFIED/DELETED events; 410 up front when ``since`` is too old."""
    last_id = request.headers.get("last-event-id")
    if last_id and last_id.isdigit():
        since = int(last_id)  # an EventSource reconnecting resumes where it stopped
    if since is not None:
        _, compacted = await asyncio.to_thread(cp.store.current_rv)
        if since < compacted:
            raise Gone(f"resourceVersion {since} is too old (the event log starts after {compacted})",
                       hint="list again and watch from the list's resourceVersion")
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

    async def stream() -> AsyncIterator[bytes]:
        yield b": watching\n\n"
        try:
            async for ev in cp.hub.watch(since=since, owner=owner, runner_id=runner_id, deadline=deadline):
                if ev is None:
                    yield b": keepalive\n\n"
                    continue
                data = f'{{"type":"{ev.type}","object":{ev.object}}}'
                yield f"id: {ev.rv}\nevent: {ev.type}\ndata: {data}\n\n".encode()
        except FlexError as err:
            body = json.dumps({"type": "ERROR", "object": problem_body(err, err.http_status, request.url.path)})
            yield f"event: ERROR\ndata: {body}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
