"""The preview proxy (issue 15): ``/p/{owner}/{env}/{port}/...`` → that port of the environment, HTTP and
WebSocket, over a stream of the runner's tunnel. See docs/access.md, "Preview URLs".

Who gets through: anyone on a public port; on a private one (the default) only the owner, with a preview
cookie (minted by /preview/signin from a web UI session) or ``Authorization: Bearer`` (curl). Without either
a browser is sent to the sign-in step and anything else gets 401; a signed-in user who is not the owner gets
404, as for an environment that does not exist. An owner's stopped environment is a 503 page.
Public ports are served in a CSP sandbox: they share the control plane's origin, and a stranger's page must
not act on the visitor's web UI session.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from urllib.parse import quote

import h11
from starlette.datastructures import Headers as StarletteHeaders
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from flex.api.tunnel import Stream, StreamClosed
from flex.controlplane.auth import Principal, authenticate, authenticate_cached
from flex.controlplane.idle import IdleWatch
from flex.controlplane.preview import headers as rewrite
from flex.controlplane.preview.credentials import COOKIE, lookup_preview
from flex.controlplane.preview.http import forward
from flex.controlplane.preview.target import Target, find_target, parse_preview_path, preview_path
from flex.controlplane.preview.websocket import AppWebSocket, relay_websocket
from flex.controlplane.routes.deps import ControlPlane
from flex.controlplane.tunnel import Tunnels
from flex.errors import FlexError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable

__all__ = ["PUBLIC_CSP", "Preview", "SignInNeeded"]

PUBLIC_CSP = b"sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals " \
             b"allow-downloads"


class SignInNeeded(Unauthenticated):
    """No credential for a private port: browsers go to the sign-in step, other clients get 401."""


def _not_found(owner: str, name: str) -> NotFound:
    return NotFound(f"environment {owner}/{name} not found", hint="list yours with flex env list")


class Preview:
    """The ASGI endpoint for ``/p/...``, HTTP and WebSocket (mounted by create_app)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = HTTPConnection(scope, receive)
        parsed = parse_preview_path(scope["path"])
        if parsed is None:
            await self._refuse(scope, receive, send, InvalidArgument(
                f"{scope['path']!r} is not a preview path", hint="/p/OWNER/ENV/PORT/..."))
            return
        owner, name, port, rest = parsed
        if not rest and scope["type"] == "http":  # /p/o/e/3000 → /p/o/e/3000/, so relative links work
            query = scope.get("query_string", b"").decode("latin-1")
            await self._redirect(send, preview_path(owner, name, port) + (f"?{query}" if query else ""), 308)
            return
        cp: ControlPlane = scope["app"].state.cp
        try:
            target, who = await self._authorize(conn, cp, owner, name, port)
            if not target.running:
                raise Unavailable(f"environment {owner}/{name} is not running",
                                  hint=f"start it: flex start {name}")
            stream = await self._open(scope, target, who)
        except FlexError as err:
            await self._refuse(scope, receive, send, err)
            return
        idle: IdleWatch = scope["app"].state.idle
        idle.opened(target.env_id)  # preview traffic is activity: an open request or WebSocket keeps it up
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send, stream, target)
            else:
                await self._http(scope, receive, send, stream, target)
        finally:
            idle.closed(target.env_id)
            await stream.close()

    # --- who ---------------------------------------------------------------------------------------------
    async def _authorize(self, conn: HTTPConnection, cp: ControlPlane, owner: str, name: str,
                         port: int) -> tuple[Target, Principal | None]:
        target = await asyncio.to_thread(find_target, cp.db, owner, name, port)
        who = await self._who(conn, cp, target)
        if target is not None and target.public:
            return target, who
        if who is None:
            raise SignInNeeded(f"preview {owner}/{name}:{port} is private",
                               hint="sign in, or pass 'Authorization: Bearer <token>'")
        if target is None or who.name != owner:
            raise _not_found(owner, name)
        return target, who

    async def _who(self, conn: HTTPConnection, cp: ControlPlane, target: Target | None) -> Principal | None:
        scheme, _, secret = conn.headers.get("authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() == "bearer" and secret.startswith("flex"):
            addr = conn.client.host if conn.client else "unknown"
            cp.limiter.check(addr)
            try:
                who = authenticate_cached(secret, cp.credentials)
                if who is None:
                    who = await asyncio.to_thread(authenticate, cp.db, secret, cp.credentials)
            except Unauthenticated:
                cp.limiter.failed(addr)
                raise
            if who.kind != "user":
                raise PermissionDenied("runner credentials work only on runner endpoints")
            return who
        cookie = conn.cookies.get(COOKIE)
        if cookie and len(cookie) <= 100 and target is not None:
            if conn.scope["type"] == "websocket" and not _same_origin(conn):
                raise PermissionDenied("a preview WebSocket from another origin does not get the preview cookie")
            return await asyncio.to_thread(lookup_preview, cp.db, cookie, target.env_id, target.port)
        return None

    async def _open(self, scope: Scope, target: Target, who: Principal | None) -> Stream:
        tunnels: Tunnels = scope["app"].state.tunnels
        header = {"kind": "tcp", "port": target.port, "env": target.env_id,
                  "user": who.name if who else f"public:{target.owner}"}
        stream = await tunnels.open(target.runner_id, header) if target.runner_id else None
        if stream is None:
            raise Unavailable(f"the runner of environment {target.owner}/{target.name} is not connected",
                              hint="check it with flex runner status; it reconnects on its own")
        try:
            await stream.recv()  # empty: connected; a refusal arrives as StreamClosed
        except StreamClosed as closed:
            await stream.close()
            raise Unavailable(f"nothing answers on port {target.port} of {target.owner}/{target.name}",
                              hint=f"start the app on port {target.port} in the environment") from (
                closed.error or None)
        return stream

    # --- what ----------------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send, stream: Stream, target: Target) -> None:
        prefix = preview_path(target.owner, target.name, target.port)
        conn = HTTPConnection(scope)
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")[len(prefix) - 1:].encode("latin-1") or b"/"
        query = scope.get("query_string", b"")
        headers = rewrite.to_app(list(scope["headers"]), port=target.port, host=conn.headers.get("host", ""),
                                 proto=scope.get("scheme", "http"), prefix=prefix,
                                 client=conn.client.host if conn.client else "")
        started = False

        async def tracked(message: dict[str, object]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        extra = [(b"content-security-policy", PUBLIC_CSP)] if target.public else []
        try:
            await forward(stream, scope["method"].encode(), path + (b"?" + query if query else b""), headers,
                          receive, tracked,  # type: ignore[arg-type]
                          lambda h: rewrite.to_browser(h, port=target.port, prefix=prefix), extra)
        except FlexError as err:
            if not started:
                await self._refuse(scope, receive, send, err)
        except StreamClosed as closed:
            if not started:
                await self._refuse(scope, receive, send, closed.error or Unavailable("the app went away"))
        except h11.ProtocolError as err:
            if not started:
                await self._refuse(scope, receive, send, Unavailable(
                    f"the app on port {target.port} did not answer in HTTP/1.1: {err}",
                    hint="a preview URL serves HTTP; for other protocols use flex port-forward"))
        except OSError:
            pass  # the browser went away mid-answer; the stream closes below

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, stream: Stream,
                         target: Target) -> None:
        prefix = preview_path(target.owner, target.name, target.port)
        client = WebSocket(scope, receive, send)
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")[len(prefix) - 1:] or "/"
        query = scope.get("query_string", b"").decode("latin-1")
        app = AppWebSocket(stream, target.port, path + (f"?{query}" if query else ""), list(scope.get("subprotocols")
                                                                                           or []))
        skip = {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                b"sec-websocket-protocol"}
        headers = [(n, v) for n, v in rewrite.to_app(
            list(scope["headers"]), port=target.port, host=client.headers.get("host", ""),
            proto="https" if scope.get("scheme") == "wss" else "http", prefix=prefix,
            client=client.client.host if client.client else "", keep_body_framing=False) if n not in skip]
        try:
            answer = await app.handshake(headers)
        except (FlexError, StreamClosed) as err:
            await self._refuse(scope, receive, send, err if isinstance(err, FlexError) else Unavailable(str(err)))
            return
        await client.accept(subprotocol=answer.headers.get("Sec-WebSocket-Protocol"))
        await relay_websocket(client, app)

    # --- answers -------------------------------------------------------------------------------------------
    async def _redirect(self, send: Send, location: str, status: int = 302) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0"),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: FlexError) -> None:
        from flex.controlplane.errors import error_response

        if scope["type"] == "websocket":
            ws = WebSocket(scope, receive, send)
            response = error_response(err, scope["path"])
            if "websocket.http.response" in scope.get("extensions", {}):
                await ws.send_denial_response(response)
            else:
                await ws.close(code=4000 + response.status_code, reason=err.message[:120])
            return
        browser = _wants_html(StarletteHeaders(scope=scope))
        if isinstance(err, SignInNeeded) and browser and scope["method"] in ("GET", "HEAD"):
            target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            query = scope.get("query_string", b"").decode("latin-1")
            await self._redirect(send, "/preview/signin?next=" + quote(target + (f"?{query}" if query else ""),
                                                                      safe=""))
            return
        if browser:
            await _page(send, err)
            return
        await error_response(err, scope["path"])(scope, receive, send)


def _wants_html(headers: StarletteHeaders) -> bool:
    return "text/html" in headers.get("accept", "")


def _same_origin(conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser: cookies are not ambient there
    return origin.split("://", 1)[-1] == conn.headers.get("host", "")


async def _page(send: Send, err: FlexError) -> None:
    """A small HTML page for a browser: what happened and what to do."""
    body = ("<!doctype html><meta charset=utf-8><title>flex preview</title>"
            f"<h1>{html.escape(err.message)}</h1>"
            + (f"<p>{html.escape(err.hint)}</p>" if err.hint else "")).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if isinstance(err, Unauthenticated):
        headers.append((b"www-authenticate", b'Bearer realm="flex"'))
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": err.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
