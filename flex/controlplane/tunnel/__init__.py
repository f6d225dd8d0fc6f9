"""The runners' tunnels this replica holds (issue 15): runner id → the ``Mux`` of its WebSocket; and, with
several replicas, the way to a tunnel another replica holds.

A runner connecting again replaces its old tunnel, whose streams end with an error. Streams are opened by
the access routes (flex/controlplane/routes/access.py) with ``open``: on the local tunnel, else forwarded to
the replica the database names as the holder (registry.py, peers.py). The framing is flex/api/tunnel.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from flex.api.tunnel import Mux, Stream, StreamClosed
from flex.controlplane.tunnel.peers import Peers
from flex.controlplane.tunnel.registry import Registry
from flex.errors import Unavailable

__all__ = ["Tunnels"]

log = logging.getLogger("flex.controlplane.tunnel")


class Tunnels:
    def __init__(self, registry: Registry | None = None, peers: Peers | None = None) -> None:
        self._by_runner: dict[str, Mux] = {}
        self.registry, self.peers = registry, peers

    def attach(self, runner_id: str, mux: Mux) -> None:
        old = self._by_runner.get(runner_id)
        self._by_runner[runner_id] = mux
        if old is not None and old is not mux:
            old.shutdown(Unavailable("the runner connected again; this stream was on its old tunnel",
                                     hint="open it again"))

    def detach(self, runner_id: str, mux: Mux) -> bool:
        """True if ``mux`` was the runner's current tunnel here (and so is no longer)."""
        if self._by_runner.get(runner_id) is mux:
            del self._by_runner[runner_id]
            return True
        return False

    def get(self, runner_id: str) -> Mux | None:
        mux = self._by_runner.get(runner_id)
        return mux if mux is not None and mux.down is None else None

    def held(self) -> list[str]:
        return [rid for rid, mux in self._by_runner.items() if mux.down is None]

    async def open(self, runner_id: str, header: dict[str, Any]) -> Stream | None:
        """A stream to the runner, on its tunnel here or through the replica holding it; None when no live
        replica holds it (or that one cannot be reached)."""
        mux = self.get(runner_id)
        if mux is not None:
            return await mux.open(header)
        if self.registry is None or self.peers is None:
            return None
        url = await asyncio.to_thread(self.registry.holder, runner_id)
        if url is None:
            return None
        try:
            return await self.peers.open(url, {**header, "runner": runner_id})
        except (Unavailable, StreamClosed) as err:
            log.warning("cannot forward a stream for runner %s: %s", runner_id, err)
            return None

    def __len__(self) -> int:
        return len(self._by_runner)
