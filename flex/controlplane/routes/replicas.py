"""The replica link (issue 15; docs/access.md, "Several replicas"): another replica of this control plane
forwards here the streams whose runner's tunnel this replica holds.

    WS /internal/v1/replicas/link    Authorization: FlexReplica ... (flex/controlplane/tunnel/replica_auth.py)

Not part of the public API (absent from /openapi.json). The other replica has authorised the user already
(own environments only) and sends the header the runner gets, plus ``"runner"``; the runner checks the
environment is bound to it, as for any stream. A link without a valid replica signature is 401 before the
upgrade, and counts against the failed-auth limiter.
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket

from flex.api.tunnel import Mux, Stream
from flex.controlplane.idle import IdleWatch
from flex.controlplane.routes.access import _deny
from flex.controlplane.routes.deps import ControlPlane
from flex.controlplane.tunnel import Tunnels
from flex.controlplane.tunnel.peers import LINK_PATH, feed_until_gone, lost, splice
from flex.controlplane.tunnel.replica_auth import ReplicaKey
from flex.errors import FlexError, Unauthenticated, Unavailable

__all__ = ["router"]

router = APIRouter()


@router.websocket(LINK_PATH)
async def replica_link(ws: WebSocket) -> None:
    cp: ControlPlane = ws.app.state.cp
    key: ReplicaKey = ws.app.state.replica_key
    addr = ws.client.host if ws.client else "unknown"
    try:
        cp.limiter.check(addr)
        if key.check(ws.headers.get("authorization", "")) is None:
            cp.limiter.failed(addr)
            raise Unauthenticated("not a replica of this control plane",
                                  hint="replicas on one database share the secret key file")
    except FlexError as err:
        await _deny(ws, err)
        return
    await ws.accept()
    tunnels: Tunnels = ws.app.state.tunnels
    idle: IdleWatch = ws.app.state.idle

    async def serve(link: Stream) -> None:
        header = dict(link.header)
        runner_id = str(header.pop("runner", ""))
        mux = tunnels.get(runner_id)
        if mux is None:  # it left (or moved) since the other replica looked
            raise Unavailable("the environment's runner is not connected",
                              hint="check it with flex runner status; it reconnects on its own")
        inner = await mux.open(header)
        env = str(header.get("env", ""))
        counted = header.get("kind") in ("exec", "ssh", "tcp")  # activity, as on the replica it came from
        if counted:
            idle.opened(env)
        try:
            await splice(link, inner)
        finally:
            if counted:
                idle.closed(env)
            await inner.close()

    mux = Mux(ws.send_bytes, serve)
    try:
        await feed_until_gone(ws, mux)
    finally:
        mux.shutdown(lost())
        with contextlib.suppress(Exception):
            await ws.close()
