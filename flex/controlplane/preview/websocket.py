"""A WebSocket through the preview proxy (issue 15): the browser's WebSocket ends at the control plane (ASGI
hands over messages, not bytes), so the proxy opens its own to the app over the tunnel stream (websockets'
sans-I/O client) and copies messages both ways: text stays text, binary stays binary, close codes pass
through. Pings are answered on each side by its own end. The app's handshake answer decides the subprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from flex.api.tunnel import MAX_MESSAGE, Stream, StreamClosed
from flex.errors import Unavailable

__all__ = ["AppWebSocket", "relay_websocket"]

Headers = list[tuple[bytes, bytes]]
MAX_APP_MESSAGE = 16 * 2**20  # one message from the app, reassembled from its fragments


class AppWebSocket:
    """The proxy's WebSocket client to the app, over one stream."""

    def __init__(self, stream: Stream, port: int, target: str, subprotocols: list[str]) -> None:
        self.stream = stream
        self.ws = ClientProtocol(parse_uri(f"ws://localhost:{port}{target}"), max_size=MAX_APP_MESSAGE,
                                 subprotocols=subprotocols or None)  # type: ignore[arg-type]
        self._pending: list[Frame] = []
        self._parts: list[bytes] = []
        self._opcode = Opcode.TEXT

    async def flush(self) -> None:
        for data in self.ws.data_to_send():
            for i in range(0, len(data), MAX_MESSAGE):
                await self.stream.send(data[i:i + MAX_MESSAGE])

    async def handshake(self, headers: Headers) -> Response:
        request = self.ws.connect()
        for name, value in headers:
            if name != b"host":  # the request has the app's own
                request.headers[name.decode("latin-1")] = value.decode("latin-1")
        self.ws.send_request(request)
        await self.flush()
        while True:
            try:
                data = await self.stream.recv()
            except StreamClosed:
                self.ws.receive_eof()
                data = b""
            if data:
                self.ws.receive_data(data)
            for event in self.ws.events_received():
                if isinstance(event, Response):
                    if self.ws.handshake_exc is not None:
                        raise Unavailable(f"the app refused the WebSocket: {self.ws.handshake_exc}")
                    return event
                self._pending.append(event)  # type: ignore[arg-type]
            if not data:
                raise Unavailable("the app closed the connection during the WebSocket handshake")

    async def messages(self) -> tuple[str | bytes | None, Close | None]:
        """The next whole message, or (None, the app's close) once it closed."""
        while True:
            while self._pending:
                frame = self._pending.pop(0)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self._opcode, self._parts = frame.opcode, [bytes(frame.data)]
                elif frame.opcode == Opcode.CONT:
                    self._parts.append(bytes(frame.data))
                elif frame.opcode == Opcode.CLOSE:
                    return None, self.ws.close_rcvd
                else:
                    continue  # ping/pong: the protocol answered already
                if frame.fin:
                    data = b"".join(self._parts)
                    return (data.decode() if self._opcode == Opcode.TEXT else data), None
            try:
                data = await self.stream.recv()
            except StreamClosed:
                self.ws.receive_eof()
                return None, self.ws.close_rcvd
            self.ws.receive_data(data)
            self._pending += self.ws.events_received()  # type: ignore[arg-type]
            await self.flush()  # pongs, the close handshake's answer


async def relay_websocket(client: WebSocket, app: AppWebSocket) -> None:
    """Copy messages both ways until either side closes; the closing side's code reaches the other."""

    async def up() -> None:
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                with contextlib.suppress(Exception):
                    app.ws.send_close(message.get("code") or 1000)
                    await app.flush()
                return
            if message.get("text") is not None:
                app.ws.send_text(message["text"].encode())
            elif message.get("bytes") is not None:
                app.ws.send_binary(message["bytes"])
            await app.flush()

    async def down() -> None:
        while True:
            data, close = await app.messages()
            if data is None:
                code = close.code if close is not None else 1011
                with contextlib.suppress(Exception):
                    await client.close(code if code not in (1005, 1006) else 1000,
                                       close.reason if close is not None else "the app closed the connection")
                return
            if isinstance(data, str):
                await client.send_text(data)
            else:
                await client.send_bytes(data)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, StreamClosed, Exception):
                await t
