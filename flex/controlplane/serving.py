"""Serving the control plane app with uvicorn, ending its watch streams first when it shuts down.

uvicorn's graceful shutdown waits up to ``timeout_graceful_shutdown`` for every response to finish; a watch
stream finishes only when its client goes, so each stop (Ctrl-C, SIGTERM, `flex daemon stop`) waited out the
whole timeout and then cut the streams. Imports nothing of the runner or runtime.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

__all__ = ["Server", "serve"]


class Server(uvicorn.Server):
    """A uvicorn server that ends the app's watch streams before it waits for responses to finish."""

    def __init__(self, app: FastAPI, **config: Any) -> None:
        super().__init__(uvicorn.Config(app, **config))
        self._hub = app.state.cp.hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._hub.end_watches()
        await super().shutdown(sockets)


def serve(app: FastAPI, **config: Any) -> bool:
    """Run ``app`` until a signal stops it (as uvicorn.run does, for one process); False if it never started."""
    server = Server(app, **config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return server.started
