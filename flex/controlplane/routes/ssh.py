"""SSH into environments through their runner's tunnel (issue 15; docs/access.md, "SSH"):

    WS  /api/v1/environments/{name}/ssh          one SSH connection's raw bytes, to the runner's SSH server
    GET /api/v1/environments/{name}/ssh/hostkey  that server's public host key (one OpenSSH line)

Authorised as every access stream is (flex/controlplane/routes/access.py): the user's token, own environments
only (another user's is 404 before the upgrade). The runner's SSH server asks for no SSH credentials because
of this check; the host key lets the client pin the runner.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response

from flex.api.tunnel import StreamClosed
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.idle import IdleWatch
from flex.controlplane.routes.access import UpgradeRequired, _open, open_ready, relay
from flex.controlplane.routes.deps import Cp, User
from flex.errors import FlexError, PermissionDenied, Unavailable

__all__ = ["HOST_KEY_HEADER", "router"]

HOST_KEY_HEADER = "X-Flex-Ssh-Host-Key"  # the accepted WebSocket's answer carries the runner's public host key

router = APIRouter(tags=["access"])


@router.websocket("/api/v1/environments/{name}/ssh")
async def environment_ssh(ws: WebSocket, name: str) -> None:
    """One SSH connection: binary messages carry the SSH protocol's bytes either way (`flex ssh --stdio`)."""
    opened = await open_ready(ws, name, {"kind": "ssh"}, "the runner ended the SSH stream")
    if opened is None:
        return
    stream, ready = opened
    host_key = ready.decode(errors="replace").strip()  # the runner's ready message is its host key
    idle: IdleWatch = ws.app.state.idle
    idle.opened(stream.header["env"])  # an open SSH connection keeps the environment from idling
    try:
        await ws.accept(headers=[(HOST_KEY_HEADER.encode(), host_key.encode())])
        await relay(ws, stream, client_channels=None)
    except (FlexError, WebSocketDisconnect):
        pass
    finally:
        idle.closed(stream.header["env"])
        await stream.close()
        # a lost tunnel is one clear line for `flex ssh --stdio` to print (ssh shows its ProxyCommand's stderr)
        code, reason = (1011, stream.error.message[:120]) if stream.error is not None else (1000, "")
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)


@router.get("/api/v1/environments/{name}/ssh", summary="ssh (WebSocket)", status_code=426,
            response_class=Response, responses={**PROBLEM_RESPONSES, 426: PROBLEM_RESPONSES[409] | {
                "description": "a WebSocket endpoint: connect with Upgrade: websocket"}},
            description="One SSH connection to the environment's runner: binary messages carry the SSH "
                        "protocol's bytes both ways. Authorization: Bearer (a user token with the write scope); "
                        "the SSH server asks for no further credentials. Pin its host key from "
                        "GET .../ssh/hostkey. Another user's environment: 404 before the upgrade. "
                        "See docs/access.md.")
async def environment_ssh_doc(name: str) -> None:
    raise UpgradeRequired("/api/v1/environments/{name}/ssh is a WebSocket endpoint",
                          hint="connect with Upgrade: websocket (flex ssh --stdio does)")


@router.get("/api/v1/environments/{name}/ssh/hostkey", response_class=PlainTextResponse,
            responses={**PROBLEM_RESPONSES, 503: PROBLEM_RESPONSES[409] | {
                "description": "the environment's runner is not connected"},
                200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                                  "description": "e.g. ssh-ed25519 AAAA... flex runner host key"}})
async def environment_ssh_hostkey(cp: Cp, who: User, request: Request, name: str) -> PlainTextResponse:
    """The public host key of the SSH server that serves the environment (its runner's), for known_hosts."""
    if who.kind != "user":
        raise PermissionDenied("runner credentials work only on runner endpoints")
    stream = await _open(cp, request.app.state.tunnels, who, name, {"kind": "ssh-hostkey"})
    try:
        line = await stream.recv()
    except StreamClosed as closed:
        raise closed.error or Unavailable("the runner ended the host key stream") from None
    finally:
        await stream.close()
    return PlainTextResponse(line.decode().strip() + "\n")
