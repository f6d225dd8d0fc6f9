"""Opening a user's access WebSocket (exec, ...) to an environment: the token in the Authorization header
(never in the URL), a refusal before the upgrade raised as the flex.errors class the server reported."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from flex.client.calls import error_from_response
from flex.client.client import unix_socket
from flex.errors import Unavailable

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = ["connect_environment", "stream_logs", "ws_url"]


def ws_url(server: str, path: str) -> str:
    if unix_socket(server) is not None:
        return f"ws://flex{path}"  # the local daemon: the socket carries it, the host name is only a name
    scheme, _, rest = server.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def connect_environment(server: str, token: str | None, name: str, what: str) -> ClientConnection:
    """A WebSocket to ``/api/v1/environments/{name}/{what}``."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect, unix_connect

    url = ws_url(server, f"/api/v1/environments/{quote(name, safe='')}/{what}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sock = unix_socket(server)
    try:
        if sock is not None:
            return unix_connect(sock, url, additional_headers=headers, max_size=1 << 20, open_timeout=30,
                                compression=None)
        return connect(url, additional_headers=headers, max_size=1 << 20, open_timeout=30, proxy=None,
                       compression=None)
    except InvalidStatus as err:
        r = err.response
        body = bytes(r.body or b"")
        raise error_from_response(httpx.Response(r.status_code, content=body,
                                                 headers=dict(r.headers.raw_items()))) from None
    except (OSError, InvalidHandshake, TimeoutError) as err:
        raise Unavailable(f"cannot reach the control plane at {server}: {err}") from err


def stream_logs(server: str, token: str | None, name: str, *, source: str = "container",
                follow: bool = False) -> Iterator[bytes]:
    """The bytes of an environment's log as they arrive (with ``follow``, until the caller stops)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(30.0, read=None if follow else 60.0)
    params = {"source": source, "follow": "1" if follow else "0"}
    try:
        sock = unix_socket(server)
        transport = httpx.HTTPTransport(uds=sock) if sock is not None else None
        with httpx.Client(base_url="http://flex" if sock is not None else server, headers=headers, timeout=timeout,
                          transport=transport) as http, \
                http.stream("GET", f"/api/v1/environments/{quote(name, safe='')}/logs", params=params) as r:
            if r.status_code >= 400:
                r.read()
                raise error_from_response(r)
            yield from r.iter_raw()
    except httpx.TransportError as err:
        raise Unavailable(f"the log stream from {server} broke off: {err}",
                          hint="run it again; if the runner restarted, it reconnects within seconds") from err
