"""Access to environments through their runner's tunnel (issue 15; docs/access.md):

    WS /api/v1/runners/{runner_id}/tunnel        a runner's one outbound connection (runner credential)
    WS /api/v1/environments/{name}/exec          a user's exec: stdin, stdout, stderr, resize, exit code
    WS /api/v1/environments/{name}/ports/{port}  a TCP connection to a port of the environment (raw bytes)
    GET /api/v1/environments/{name}/logs         container, hook or build output, whole or followed

Every stream is authorised when it opens, not once per tunnel: the user's token (header ``Authorization:
Bearer``; tokens never go in URLs, which get logged), and only the user's own environments: any other is
404, refused before the WebSocket is accepted. The runner is told the environment's id and serves only
environments bound to it. Refusals before the upgrade are the API's usual problem+json answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from flex.api.access import RESIZE, STATUS, STDIN, ExecRequest
from flex.api.tunnel import MAX_MESSAGE, Mux, Stream, StreamClosed
from flex.controlplane.auth import Principal, authenticate, authenticate_cached
from flex.controlplane.errors import PROBLEM_RESPONSES, error_response
from flex.controlplane.idle import IdleWatch
from flex.controlplane.routes.deps import ControlPlane, Cp, User
from flex.controlplane.tunnel import Tunnels
from flex.controlplane.tunnel.peers import feed_until_gone, lost
from flex.controlplane.ui.websocket import cookie_principal, has_cookie
from flex.errors import (
    FailedPrecondition,
    FlexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["UpgradeRequired", "open_ready", "open_stream", "relay", "router"]

router = APIRouter(tags=["access"])
log = logging.getLogger("flex.controlplane.access")
_UNAVAILABLE = PROBLEM_RESPONSES[409] | {"description": "the environment's runner is not connected"}


class UpgradeRequired(FlexError):
    kind = "UpgradeRequired"
    http_status = 426


def _websocket_doc(path: str, summary: str, description: str) -> None:
    """WebSocket routes are missing from OpenAPI: a plain GET of the same path documents one (and answers
    426, as it cannot be served without the upgrade)."""

    async def doc(name: str) -> None:
        raise UpgradeRequired(f"{path} is a WebSocket endpoint", hint="connect with Upgrade: websocket")

    async def doc_port(name: str, port: int) -> None:
        await doc(name)

    router.add_api_route(path, doc_port if "{port}" in path else doc, methods=["GET"], summary=summary,
                         description=description, status_code=426, response_class=Response, name=summary,
                         responses={**PROBLEM_RESPONSES, 426: PROBLEM_RESPONSES[409] | {
                             "description": "a WebSocket endpoint: connect with Upgrade: websocket"}})


async def _principal(ws: WebSocket) -> Principal:
    cp: ControlPlane = ws.app.state.cp
    addr = ws.client.host if ws.client else "unknown"
    cp.limiter.check(addr)
    if has_cookie(ws):  # a browser (the web UI's terminal): its session, from this server's own pages only
        return await cookie_principal(ws)
    scheme, _, secret = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("no credentials", hint="pass 'Authorization: Bearer <token>'")
    try:
        who = authenticate_cached(secret.strip(), cp.credentials)
        if who is None:
            who = await asyncio.to_thread(authenticate, cp.db, secret.strip(), cp.credentials)
        return who
    except Unauthenticated:
        cp.limiter.failed(addr)
        raise


async def _deny(ws: WebSocket, err: FlexError) -> None:
    """Refuse the upgrade with the API's error answer (404, 401, ...); a server without the denial
    extension gets a close code 4000 + status instead."""
    response = error_response(err, ws.url.path)
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(code=4000 + response.status_code, reason=err.message[:120])


def _tunnels(ws: WebSocket) -> Tunnels:
    tunnels: Tunnels = ws.app.state.tunnels
    return tunnels


@router.websocket("/api/v1/runners/{runner_id}/tunnel")
async def runner_tunnel(ws: WebSocket, runner_id: str) -> None:
    """The runner's tunnel: binary frames of flex/api/tunnel.py; the control plane opens the streams."""
    try:
        who = await _principal(ws)
        if who.kind != "runner" or who.id != runner_id:
            raise PermissionDenied("only the runner itself may open its tunnel")
    except FlexError as err:
        await _deny(ws, err)
        return
    await ws.accept()
    mux = Mux(ws.send_bytes)
    tunnels = _tunnels(ws)
    tunnels.attach(runner_id, mux)
    try:
        if tunnels.registry is not None:  # other replicas forward this runner's streams here
            try:
                await asyncio.to_thread(tunnels.registry.claim, runner_id)
            except Exception:  # a database hiccup: the next replica heartbeat records it
                log.warning("cannot record the tunnel of runner %s", runner_id, exc_info=True)
        await feed_until_gone(ws, mux)
    finally:
        if tunnels.detach(runner_id, mux) and tunnels.registry is not None:
            with contextlib.suppress(Exception):  # a database hiccup: the next replica heartbeat removes it
                await asyncio.to_thread(tunnels.registry.release, runner_id)
        mux.shutdown(lost())
        with contextlib.suppress(Exception):
            await ws.close()


def _locate(cp: ControlPlane, who: Principal, name: str) -> tuple[str, str]:
    """(environment id, runner id) of the caller's own environment ``name``; NotFound for anyone else's."""
    with cp.db.read() as s:
        row = cp.store.find(s, who, name, None)
        if row.owner != who.name:  # own environments only, an admin's too: anyone else's is 404
            raise NotFound(f"environment {name!r} not found", hint="list environments with `flex ls`")
        if row.runner_id is None:
            raise FailedPrecondition(f"environment {name!r} is not on a runner yet",
                                     hint="wait until it is running (flex env show)")
        return row.id, row.runner_id


async def open_stream(ws: WebSocket, name: str, header: dict[str, Any]) -> Stream:
    """Authorise the caller for ``name`` and open a stream on its runner's tunnel (raises FlexError)."""
    who = await _principal(ws)
    if who.kind != "user":
        raise PermissionDenied("runner credentials work only on runner endpoints")
    if "write" not in who.scopes:
        raise PermissionDenied("this token lacks the 'write' scope", hint="create a token with that scope")
    return await _open(ws.app.state.cp, _tunnels(ws), who, name, header)


async def open_ready(ws: WebSocket, name: str, header: dict[str, Any],
                     ended: str) -> tuple[Stream, bytes] | None:
    """``open_stream``, then the runner's first message (its "ready"); a refusal, or the runner ending the
    stream (``ended`` says so), is denied on ``ws`` before the upgrade, and None returned."""
    stream: Stream | None = None
    try:
        stream = await open_stream(ws, name, header)
        try:
            return stream, await stream.recv()
        except StreamClosed as closed:
            raise closed.error or Unavailable(ended) from None
    except FlexError as err:
        if stream is not None:
            await stream.close()
        await _deny(ws, err)
        return None


async def _open(cp: ControlPlane, tunnels: Tunnels, who: Principal, name: str, header: dict[str, Any]) -> Stream:
    env_id, runner_id = await asyncio.to_thread(_locate, cp, who, name)
    stream = await tunnels.open(runner_id, {**header, "env": env_id, "user": who.name})
    if stream is None:
        raise Unavailable(f"the runner of environment {name!r} is not connected",
                          hint="check it with flex runner status; it reconnects on its own")
    return stream


async def _status(ws: WebSocket, body: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await ws.send_bytes(bytes([STATUS]) + json.dumps(body).encode())


@router.websocket("/api/v1/environments/{name}/exec")
async def exec_environment(ws: WebSocket, name: str) -> None:
    """Run a command in the environment as its remoteUser. First message: an ExecRequest (JSON text);
    then binary messages, one channel byte each (docs/access.md)."""
    stream: Stream | None = None
    try:
        stream = await open_stream(ws, name, {"kind": "exec"})
    except FlexError as err:
        await _deny(ws, err)
        return
    idle: IdleWatch = ws.app.state.idle
    idle.opened(stream.header["env"])  # an open session keeps the environment from idling
    try:
        await ws.accept()
        try:
            request = ExecRequest.model_validate_json(await ws.receive_text())
        except (ValidationError, KeyError) as err:
            raise InvalidArgument(f"the first message must be an exec request: {err}",
                                  hint='send {"command": ["sh"], "tty": false, "stdin": false}') from None
        await stream.send(json.dumps(request.to_wire()).encode())
        await relay(ws, stream, client_channels=(STDIN, RESIZE))
    except FlexError as err:
        await _status(ws, {"error": err.to_dict()})
    except WebSocketDisconnect:
        pass
    finally:
        idle.closed(stream.header["env"])
        await stream.close()
        with contextlib.suppress(Exception):
            await ws.close()


async def relay(ws: WebSocket, stream: Stream, client_channels: tuple[int, ...] | None) -> None:
    """Copy messages both ways until either side ends; the stream's error, if any, reaches the client.
    ``client_channels``: the channel bytes a client may send (None: raw bytes, cut to MAX_MESSAGE)."""

    async def up() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if not data:
                continue
            if client_channels is None:
                for i in range(0, len(data), MAX_MESSAGE):
                    await stream.send(data[i:i + MAX_MESSAGE])
                continue
            if len(data) > MAX_MESSAGE or data[0] not in client_channels:
                raise InvalidArgument(f"a message is one channel byte of {client_channels} and at most "
                                      f"{MAX_MESSAGE} bytes")
            await stream.send(data)

    async def down() -> None:
        while True:
            await ws.send_bytes(await stream.recv())

    # Either side may be first to see a lost runner: a client's stdin EOF, written to a tunnel whose socket
    # just died, fails before the tunnel's end reaches the stream. So the stream's error is taken from
    # whichever task ended, after a failed write waits briefly for it, and the caller reports it once.
    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done and not tasks[0].cancelled() and \
                not isinstance(tasks[0].exception(), FlexError | StreamClosed | None):
            done |= (await asyncio.wait(tasks[1:], timeout=3.0))[0]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    for t in done:
        err = None if t.cancelled() else t.exception()
        if isinstance(err, StreamClosed):
            err = err.error if client_channels is not None else None
        if isinstance(err, FlexError):
            raise err


@router.get("/api/v1/environments/{name}/logs", tags=["access"], response_class=StreamingResponse,
            responses={**PROBLEM_RESPONSES, 503: _UNAVAILABLE,
                       200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "the log's bytes; with follow=1, until closed"}})
async def environment_logs(
    cp: Cp, who: User, request: Request, name: str,
    source: Annotated[Literal["container", "hooks", "build"], Query(
        description="container: what the container's main process wrote; hooks: lifecycle hook output; "
                    "build: image build output")] = "container",
    follow: Annotated[bool, Query(description="keep streaming what is appended")] = False,
) -> StreamingResponse:
    """An environment's log, whole, or followed as it grows (only the caller's own environments)."""
    stream = await _open(cp, request.app.state.tunnels, who, name, {"kind": "logs", "source": source,
                                                                    "follow": follow})
    try:
        first = await stream.recv()  # empty: the runner found the log; an error arrives as StreamClosed
    except StreamClosed as closed:
        await stream.close()
        raise closed.error or Unavailable("the runner ended the log stream") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            while True:
                try:
                    chunk = await stream.recv()
                except StreamClosed:
                    return
                if chunk:
                    yield chunk
        finally:
            await stream.close()

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.websocket("/api/v1/environments/{name}/ports/{port}")
async def environment_port(ws: WebSocket, name: str, port: int) -> None:
    """A TCP connection to ``port`` inside the environment: binary messages carry its bytes either way;
    closing the WebSocket closes the connection, and the other way round."""
    if not 0 < port < 65536:
        await _deny(ws, InvalidArgument(f"port {port}: expected 1-65535"))
        return
    opened = await open_ready(ws, name, {"kind": "tcp", "port": port}, "the runner ended the connection")
    if opened is None:  # refused (the runner could not connect, or the caller may not)
        return
    stream = opened[0]  # its first message is empty: connected
    idle: IdleWatch = ws.app.state.idle
    idle.opened(stream.header["env"])
    try:
        await ws.accept()
        await relay(ws, stream, client_channels=None)
    except (FlexError, WebSocketDisconnect):
        pass
    finally:
        idle.closed(stream.header["env"])
        await stream.close()
        with contextlib.suppress(Exception):
            await ws.close()


_websocket_doc("/api/v1/environments/{name}/exec", "exec (WebSocket)",
               "Run a command in the environment as its remoteUser. Authorization: Bearer (a user token with "
               "the write scope). First message (text): {\"command\": [...], \"tty\": bool, \"stdin\": bool, "
               "\"cols\": n, \"rows\": n}. Then binary messages, one channel byte first: 0 stdin (empty: "
               "EOF), 1 stdout, 2 stderr, 3 status (JSON {\"exitCode\": n} or {\"error\": ...}, the last), "
               "4 resize (JSON {\"cols\", \"rows\"}). Another user's environment: 404 before the upgrade. "
               "See docs/access.md.")
_websocket_doc("/api/v1/environments/{name}/ports/{port}", "port (WebSocket)",
               "One TCP connection to port {port} on the environment's loopback: binary messages carry its "
               "bytes both ways; closing either end closes the other. A refused connection: 503 before the "
               "upgrade. See docs/access.md.")
