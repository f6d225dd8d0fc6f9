"""The runner's end of the tunnel: one outbound WebSocket to the control plane, held open with reconnects
(exponential backoff with jitter, 0.5 s up to 30 s), serving each stream the control plane opens.

Runs its own asyncio loop in one thread of the agent. A stream names an environment by id; the handler
serves it only if that environment is bound to this runner (asked of the control plane with the runner
credential, which answers 404 for any other) and its container is on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from flex.api.tunnel import Mux, Stream
from flex.client.client import unix_socket
from flex.errors import FlexError, InvalidArgument
from flex.runner.credential import Credential

__all__ = ["Handler", "TunnelClient", "tunnel_url"]

log = logging.getLogger("flex.runner.access")

Handler = Callable[[Stream], Awaitable[None]]


def tunnel_url(cred: Credential) -> str:
    if unix_socket(cred.url) is not None:  # the local daemon: the socket carries it, the host is only a name
        return f"ws://flex/api/v1/runners/{cred.runner_id}/tunnel"
    base = cred.url.rstrip("/")
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/v1/runners/{cred.runner_id}/tunnel"


class TunnelClient:
    def __init__(self, home: Path, cred: Credential, handlers: Mapping[str, Handler]) -> None:
        self.home, self.cred, self.handlers = home, cred, handlers
        self.connected = threading.Event()
        self.error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def _serve(self, stream: Stream) -> None:
        kind = str(stream.header.get("kind"))
        handler = self.handlers.get(kind)
        if handler is None:
            raise InvalidArgument(f"this runner does not serve {kind!r} streams", hint="upgrade the runner")
        await handler(stream)

    async def _session(self) -> None:
        from websockets.asyncio.client import connect, unix_connect

        auth = {"Authorization": f"Bearer {self.cred.credential}"}
        sock = unix_socket(self.cred.url)
        opts: dict[str, Any] = {"additional_headers": auth, "max_size": 1 << 20, "compression": None,
                                "ping_interval": 20, "ping_timeout": 20, "open_timeout": 15}
        opened = unix_connect(sock, tunnel_url(self.cred), **opts) if sock is not None else \
            connect(tunnel_url(self.cred), proxy=None, **opts)
        async with opened as ws:
            mux = Mux(ws.send, self._serve)
            self.connected.set()
            self.error = None
            log.info("tunnel to %s open", self.cred.url)
            try:
                async for message in ws:
                    if isinstance(message, bytes):
                        await mux.feed(message)
            finally:
                self.connected.clear()
                mux.shutdown()

    async def _main(self) -> None:
        assert self._stop is not None
        delay = 0.5
        while not self._stop.is_set():
            session = asyncio.create_task(self._session())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait([session, stop], return_when=asyncio.FIRST_COMPLETED)
            if not session.done():
                session.cancel()
                with contextlib.suppress(BaseException):
                    await session
                return
            stop.cancel()
            err = session.exception() if not session.cancelled() else None
            if err is None:
                delay = 0.5  # it was open and closed: reconnect soon
            else:
                self.error = f"{type(err).__name__}: {err}" if not isinstance(err, FlexError) else str(err)
                log.warning("tunnel: %s; reconnecting in %.1f s", self.error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0) if err is not None else 0.5

    def run(self, stopping: threading.Event) -> None:
        """Hold the tunnel until ``stopping`` is set (call in a thread of its own)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        def watch() -> None:
            stopping.wait()
            loop.call_soon_threadsafe(self._stop.set)  # type: ignore[union-attr]

        threading.Thread(target=watch, name="tunnel-stop", daemon=True).start()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()
