"""The tunnel's framing and its stream multiplexer, shared by the control plane and the runner (issue 15).

A runner holds one WebSocket to the control plane; every user stream (an exec, later SSH, a port, a log
follow) is a *stream* on it. Each WebSocket binary message is one frame:

    type (1 byte) | stream id (4 bytes, big-endian) | payload

    OPEN   1  control plane → runner: payload is JSON, {"kind": "exec", "env": "env_...", ...}
    DATA   2  either way: payload is one message of the stream's own protocol (at most MAX_MESSAGE bytes)
    WINDOW 3  either way: payload is 4 bytes, big-endian: the receiver consumed that many more DATA bytes
    CLOSE  4  either way: the stream is over; payload empty, or JSON {"error": {"kind", "message", "hint"}}

Flow control is per stream and per direction, with credit in bytes as in HTTP/2: a sender starts with
INITIAL_WINDOW bytes of credit, spends len(payload) on each DATA and waits for WINDOW frames before it may
send more. A receiver grants the rest of its WINDOW_SIZE as the stream opens (so a peer of an older version,
whose window is the initial one, still interoperates), then credit only once its consumer took the data:
no stream buffers more than WINDOW_SIZE bytes however fast its producer or however stalled its consumer,
and the tunnel's reader never waits on one stream. The control plane opens streams (odd ids); the runner never does.
No I/O here: ``Mux`` is fed frames and given an ``async send(frame)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from flex.errors import FlexError, Unavailable, error_for_kind

__all__ = ["CLOSE", "DATA", "INITIAL_WINDOW", "MAX_MESSAGE", "OPEN", "WINDOW", "WINDOW_SIZE", "Mux", "Stream",
           "StreamClosed", "decode", "encode"]

OPEN = 1
DATA = 2
WINDOW = 3
CLOSE = 4
INITIAL_WINDOW = 256 * 1024  # the protocol's: every peer, of any version, buffers at least this much
# The receive window covers the bandwidth-delay product of three processes on a loaded machine (a few ms
# of scheduling at 500 MiB/s); large messages keep the per-frame cost (framing, asyncio wake-ups) small.
WINDOW_SIZE = 2 * 1024 * 1024
MAX_MESSAGE = 256 * 1024
_HEAD = struct.Struct(">BI")


def encode(kind: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind, stream_id) + payload


def decode(frame: bytes) -> tuple[int, int, bytes]:
    if len(frame) < _HEAD.size:
        raise ValueError("a tunnel frame is at least 5 bytes")
    kind, sid = _HEAD.unpack_from(frame)
    return kind, sid, frame[_HEAD.size:]


def _initial_grant(sid: int) -> bytes:
    return encode(WINDOW, sid, struct.pack(">I", WINDOW_SIZE - INITIAL_WINDOW))


class StreamClosed(Exception):
    """The stream ended: ``error`` is why, when it did not end normally."""

    def __init__(self, error: FlexError | None = None) -> None:
        super().__init__(str(error) if error else "stream closed")
        self.error = error


def _error_payload(err: FlexError) -> bytes:
    return json.dumps({"error": err.to_dict()}).encode()


def _error_from(payload: bytes) -> FlexError | None:
    if not payload:
        return None
    try:
        body = json.loads(payload)["error"]
        return error_for_kind(str(body["kind"]), str(body["message"]), hint=body.get("hint"))
    except (ValueError, KeyError, TypeError):
        return FlexError("the stream ended with an unreadable error")


class Stream:
    """One multiplexed stream: ``send`` waits for credit; ``recv`` returns the next message (and grants its
    credit back); both raise StreamClosed once it is over."""

    def __init__(self, mux: Mux, sid: int, header: dict[str, Any] | None = None) -> None:
        self.mux, self.id, self.header = mux, sid, header or {}
        self._inbox: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._credit = INITIAL_WINDOW
        self._writable = asyncio.Event()
        self._writable.set()
        self._unacked = 0
        self.closed = False  # by either side: no more sending
        self.error: FlexError | None = None
        self._remote_closed = False

    # --- sending -----------------------------------------------------------------------------------
    async def send(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"a stream message is at most {MAX_MESSAGE} bytes")
        while self._credit < len(message):
            if self.closed:
                raise StreamClosed(self.error)
            self._writable.clear()
            await self._writable.wait()
        if self.closed:
            raise StreamClosed(self.error)
        self._credit -= len(message)
        await self.mux.send(encode(DATA, self.id, message))

    async def close(self, error: FlexError | None = None) -> None:
        """End the stream (with ``error`` as the reason the other side sees); safe to repeat."""
        if self.closed:
            return
        self._end(error, remote=False)
        if not self._remote_closed:
            self.mux.forget(self.id)
        with contextlib.suppress(Exception):  # the tunnel is gone: the other side ends its streams anyway
            await self.mux.send(encode(CLOSE, self.id, _error_payload(error) if error else b""))

    # --- receiving ---------------------------------------------------------------------------------
    async def recv(self) -> bytes:
        while not self._inbox:
            if self._remote_closed or (self.closed and not self._inbox):
                raise StreamClosed(self.error)
            self._readable.clear()
            await self._readable.wait()
        message = self._inbox.popleft()
        self._buffered -= len(message)
        self._unacked += len(message)
        if self._unacked >= WINDOW_SIZE // 4 and not self.closed:
            grant, self._unacked = self._unacked, 0
            with contextlib.suppress(Exception):
                await self.mux.send(encode(WINDOW, self.id, struct.pack(">I", grant)))
        return message

    # --- fed by the mux ----------------------------------------------------------------------------
    def _deliver(self, payload: bytes) -> bool:
        if self._buffered + len(payload) > WINDOW_SIZE:
            return False  # the peer sent beyond its credit
        self._inbox.append(payload)
        self._buffered += len(payload)
        self._readable.set()
        return True

    def _grant(self, n: int) -> None:
        self._credit += n
        self._writable.set()

    def _end(self, error: FlexError | None, *, remote: bool) -> None:
        if remote:
            self._remote_closed = True
        if self.error is None:
            self.error = error
        self.closed = True
        self._readable.set()
        self._writable.set()


class Mux:
    """The streams of one tunnel. ``feed`` every frame received; ``open`` (control plane) or ``on_open``
    (runner) makes streams; ``shutdown`` ends every stream with an error when the tunnel goes."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]],
                 on_open: Callable[[Stream], Awaitable[None]] | None = None) -> None:
        self._send, self.on_open = send, on_open
        self.streams: dict[int, Stream] = {}
        self._next = 1
        self._lock = asyncio.Lock()
        self.down: FlexError | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, frame: bytes) -> None:
        if self.down is not None:
            raise StreamClosed(self.down)
        async with self._lock:  # one writer at a time on the WebSocket
            await self._send(frame)

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)

    async def open(self, header: dict[str, Any]) -> Stream:
        if self.down is not None:
            raise self.down
        sid, self._next = self._next, self._next + 2
        stream = self.streams[sid] = Stream(self, sid, header)
        await self.send(encode(OPEN, sid, json.dumps(header).encode()))
        await self.send(_initial_grant(sid))
        return stream

    async def feed(self, frame: bytes) -> None:
        kind, sid, payload = decode(frame)
        stream = self.streams.get(sid)
        if kind == OPEN:
            if self.on_open is None or stream is not None:
                await self.send(encode(CLOSE, sid, _error_payload(FlexError("unexpected OPEN"))))
                return
            try:
                header = json.loads(payload)
                if not isinstance(header, dict):
                    raise ValueError
            except ValueError:
                await self.send(encode(CLOSE, sid, _error_payload(FlexError("unreadable OPEN"))))
                return
            stream = self.streams[sid] = Stream(self, sid, header)
            await self.send(_initial_grant(sid))
            task = asyncio.create_task(self._serve(stream), name=f"flex-stream-{sid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if stream is None:
            return  # a frame for a stream already over: late data or a late grant
        if kind == DATA:
            if not stream._deliver(payload):
                stream._end(FlexError("the peer sent more than its flow-control window"), remote=True)
                self.forget(sid)
                await self.send(encode(CLOSE, sid, _error_payload(FlexError("flow-control window exceeded"))))
        elif kind == WINDOW and len(payload) == 4:
            stream._grant(struct.unpack(">I", payload)[0])
        elif kind == CLOSE:
            stream._end(_error_from(payload), remote=True)
            self.forget(sid)

    async def _serve(self, stream: Stream) -> None:
        assert self.on_open is not None
        try:
            await self.on_open(stream)
        except StreamClosed:
            pass
        except FlexError as err:
            await stream.close(err)
        except Exception as err:  # a bug in a handler ends its stream, never the tunnel
            await stream.close(FlexError(f"the runner failed serving this stream: {type(err).__name__}: {err}"))
        finally:
            await stream.close()

    def shutdown(self, error: FlexError | None = None) -> None:
        """The tunnel is gone: every stream on it ends with ``error``."""
        self.down = error or Unavailable("the runner's tunnel closed")
        for stream in list(self.streams.values()):
            stream._end(self.down, remote=True)
        self.streams.clear()
        for task in list(self._tasks):
            task.cancel()
