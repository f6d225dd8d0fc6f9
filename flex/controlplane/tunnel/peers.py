"""Links to the other replicas, for streams whose runner's tunnel another replica holds (issue 15).

A link is one WebSocket from this replica to ``WS {advertise url}/internal/v1/replicas/link`` of the holder,
opened on first use and kept: the same framing and flow control as a runner's tunnel (flex/api/tunnel.py),
this replica opening the streams. Each stream's OPEN header is the one the runner gets, plus ``"runner"``;
the holder opens it on that runner's tunnel and ``splice``s the two, so every hop buffers at most one window
per direction and a stalled client stalls the runner, not anyone's memory. When a link drops, its streams
end with the error a lost tunnel gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from starlette.websockets import WebSocketDisconnect

from flex.api.tunnel import Mux, Stream, StreamClosed
from flex.controlplane.tunnel.replica_auth import ReplicaKey
from flex.errors import FlexError, Unavailable

__all__ = ["LINK_PATH", "Peers", "feed_until_gone", "link_url", "lost", "splice"]

log = logging.getLogger("flex.controlplane.tunnel")

LINK_PATH = "/internal/v1/replicas/link"
CONNECT_TIMEOUT = 5.0


def lost() -> Unavailable:
    """The one error a lost tunnel gives, direct or forwarded."""
    return Unavailable("the connection to the environment's runner was lost",
                       hint="the runner may be restarting; try again in a few seconds")


async def feed_until_gone(ws: Any, mux: Mux) -> None:
    """Feeds a tunnel WebSocket's frames to ``mux`` until the peer goes (a bad frame ends it too)."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                await mux.feed(message["bytes"])
    except (WebSocketDisconnect, StreamClosed, ValueError):
        pass


def link_url(base: str) -> str:
    scheme, _, rest = base.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{LINK_PATH}"


class Peers:
    def __init__(self, key: ReplicaKey, replica_id: str) -> None:
        self.key, self.replica_id = key, replica_id
        self._links: dict[str, Mux] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._readers: set[asyncio.Task[None]] = set()
        self._failed: dict[str, float] = {}  # url → when connecting last failed

    async def open(self, url: str, header: dict[str, Any]) -> Stream:
        """A stream to the replica at ``url``; Unavailable if it cannot be reached."""
        mux = await self._link(url)
        return await mux.open(header)

    async def _link(self, url: str) -> Mux:
        async with self._locks[url]:
            mux = self._links.get(url)
            if mux is not None and mux.down is None:
                return mux
            loop = asyncio.get_running_loop()
            if loop.time() - self._failed.get(url, -CONNECT_TIMEOUT) < CONNECT_TIMEOUT:
                # streams queued behind a connect that timed out fail at once, not one timeout each
                raise Unavailable(f"replica {url} was unreachable a moment ago")
            from websockets.asyncio.client import connect

            try:
                ws = await connect(link_url(url), additional_headers={
                    "Authorization": self.key.authorization(self.replica_id)}, open_timeout=CONNECT_TIMEOUT,
                    max_size=1 << 20, compression=None, ping_interval=10, ping_timeout=10, proxy=None)
            except Exception as err:  # refused, timed out, refused upgrade: that replica is not there
                self._failed[url] = loop.time()
                raise Unavailable(f"replica {url} is unreachable: {type(err).__name__}") from None
            self._failed.pop(url, None)
            mux = self._links[url] = Mux(ws.send)
            reader = asyncio.create_task(self._read(url, ws, mux), name=f"flex-replica-link-{url}")
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            return mux

    async def _read(self, url: str, ws: Any, mux: Mux) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await mux.feed(message)
        except Exception as err:  # the other replica went away
            log.info("link to replica %s lost: %s", url, type(err).__name__)
        finally:
            mux.shutdown(lost())
            if self._links.get(url) is mux:
                del self._links[url]
            with contextlib.suppress(Exception):
                await ws.close()

    async def close(self) -> None:
        for reader in list(self._readers):
            reader.cancel()
        for reader in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


async def splice(a: Stream, b: Stream) -> None:
    """Copy messages both ways until either stream ends; its error (or none) ends the other one too."""

    async def pump(src: Stream, dst: Stream) -> None:
        try:
            while True:
                message = await src.recv()
                await dst.send(message)  # waits for dst's credit: src's credit comes back only after
        except StreamClosed:
            pass
        finally:
            error: FlexError | None = src.error if src.closed else None
            with contextlib.suppress(Exception):
                await dst.close(error)
            with contextlib.suppress(Exception):
                await src.close(dst.error if dst.closed else None)

    pumps = [asyncio.create_task(pump(a, b)), asyncio.create_task(pump(b, a))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for p in pumps:
            p.cancel()
        for p in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await p
