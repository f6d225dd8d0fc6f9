"""One HTTP/1.1 exchange with the app, over a tunnel stream to its port (issue 15).

The control plane is the HTTP client here (h11, sans-I/O): the request goes out with its body streamed as it
arrives, the answer comes back as it is produced; both directions ride the stream's flow control, so a
large upload or download never sits in memory. One stream per request (``Connection: close``): opening a
stream is one frame, and the app's own keep-alive then never pins a stream nobody uses.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
from starlette.types import Receive, Send

from flex.api.tunnel import MAX_MESSAGE, Stream, StreamClosed
from flex.errors import Unavailable

__all__ = ["AppConnection", "forward"]

Headers = list[tuple[bytes, bytes]]


class AppConnection:
    """h11's client side over a stream: ``write`` an event, ``next_event`` until the answer is read."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self._eof = False

    async def write(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        for i in range(0, len(data or b""), MAX_MESSAGE):
            await self.stream.send((data or b"")[i:i + MAX_MESSAGE])

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            if self._eof:
                raise Unavailable("the app closed the connection before it answered",
                                  hint="is it listening on that port, and speaking HTTP/1.1?")
            try:
                data = await self.stream.recv()
            except StreamClosed:
                data, self._eof = b"", True
            if data or self._eof:
                self.h11.receive_data(data)


async def forward(stream: Stream, method: bytes, target: bytes, headers: Headers, receive: Receive, send: Send,
                  response_headers: Callable[[Headers], Headers], head: Headers = []) -> int:  # noqa: B006
    """Send the request (its body read from ``receive``), pass the answer to ``send``; the status code.
    ``head``: headers added to the answer (after ``response_headers`` rewrote the app's)."""
    conn = AppConnection(stream)
    await conn.write(h11.Request(method=method, target=target, headers=[*headers, (b"connection", b"close")]))
    framed = any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)
    while framed:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise StreamClosed(None)
        if message.get("body"):
            await conn.write(h11.Data(data=message["body"]))
        if not message.get("more_body", False):
            break
    await conn.write(h11.EndOfMessage())
    event = await conn.next_event()
    while isinstance(event, h11.InformationalResponse):  # 100 Continue and the like: the body is already sent
        event = await conn.next_event()
    if not isinstance(event, h11.Response):
        raise Unavailable(f"the app answered with {type(event).__name__}, not an HTTP response")
    status = event.status_code
    await send({"type": "http.response.start", "status": status,
                "headers": response_headers(list(event.headers)) + head})
    while True:
        event = await conn.next_event()
        if isinstance(event, h11.Data):
            await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return status
