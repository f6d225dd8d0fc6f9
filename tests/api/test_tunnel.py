"""The tunnel's multiplexer (flex/api/tunnel.py) between two real Mux ends joined by asyncio queues, as
the WebSocket joins them: streams are independent, flow control bounds what is buffered, and a tunnel
going down ends every stream on it with its error."""

from __future__ import annotations

import asyncio

import pytest

from flex.api.tunnel import INITIAL_WINDOW, MAX_MESSAGE, WINDOW_SIZE, Mux, Stream, StreamClosed
from flex.errors import NotFound, Unavailable


class _Pipe:
    """Two muxes, each one's frames fed to the other by a reader task (the WebSocket's role)."""

    def __init__(self, on_open: object) -> None:
        self.to_runner: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_cp: asyncio.Queue[bytes] = asyncio.Queue()
        self.cp = Mux(self.to_runner.put)
        self.runner = Mux(self.to_cp.put, on_open)  # type: ignore[arg-type]
        self.tasks = [asyncio.create_task(self._pump(self.to_runner, self.runner)),
                      asyncio.create_task(self._pump(self.to_cp, self.cp))]

    @staticmethod
    async def _pump(q: asyncio.Queue[bytes], mux: Mux) -> None:
        while True:
            await mux.feed(await q.get())

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()


async def test_echo_streams_are_independent_and_a_stalled_one_buffers_at_most_its_window() -> None:
    served: list[Stream] = []

    async def echo(stream: Stream) -> None:
        served.append(stream)
        if stream.header.get("kind") == "sink":  # never reads: its sender must stop at the window
            await asyncio.sleep(3600)
        while True:
            await stream.send(await stream.recv())

    pipe = _Pipe(echo)
    try:
        fast = await pipe.cp.open({"kind": "echo"})
        sink = await pipe.cp.open({"kind": "sink"})
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await sink.send(b"x" * MAX_MESSAGE)
                sent += MAX_MESSAGE

        flooder = asyncio.create_task(flood())
        for i in range(200):  # 200 round trips on one stream while the other is stalled
            await fast.send(b"%d" % i)
            assert await fast.recv() == b"%d" % i
        await asyncio.sleep(0.05)
        assert INITIAL_WINDOW < sent <= WINDOW_SIZE and not flooder.done()  # the whole window, no more
        assert served[1]._buffered <= WINDOW_SIZE
        flooder.cancel()

        # the runner's handler raising a FlexError closes that stream with it, and only that stream
        async def failing(stream: Stream) -> None:
            raise NotFound("environment not found on this runner")

        pipe.runner.on_open = failing
        bad = await pipe.cp.open({"kind": "x"})
        with pytest.raises(StreamClosed) as closed:
            await bad.recv()
        assert isinstance(closed.value.error, NotFound) and "not found" in str(closed.value.error)
        await fast.send(b"still")
        assert await fast.recv() == b"still"

        # the tunnel goes: every stream on it ends with the reason, and new opens fail at once
        pipe.cp.shutdown(Unavailable("the connection to the environment's runner was lost"))
        with pytest.raises(StreamClosed) as closed:
            await fast.recv()
        assert isinstance(closed.value.error, Unavailable)
        with pytest.raises(Unavailable):
            await pipe.cp.open({"kind": "echo"})
    finally:
        pipe.close()


async def test_a_peer_sending_beyond_its_credit_loses_the_stream() -> None:
    from flex.api.tunnel import DATA, encode

    got: list[Stream] = []

    async def keep(stream: Stream) -> None:
        got.append(stream)
        await asyncio.sleep(3600)

    pipe = _Pipe(keep)
    try:
        s = await pipe.cp.open({"kind": "k"})
        await asyncio.sleep(0.01)
        for _ in range(WINDOW_SIZE // MAX_MESSAGE + 1):  # bypass send()'s credit check
            await pipe.to_runner.put(encode(DATA, s.id, b"y" * MAX_MESSAGE))
        await asyncio.sleep(0.05)
        assert got[0].closed and "window" in str(got[0].error)
        with pytest.raises(StreamClosed):
            await s.recv()
    finally:
        pipe.close()


async def test_a_peer_with_only_the_initial_window_is_never_sent_more() -> None:
    """A peer of an older version grants no window beyond the protocol's initial one: a sender stops there;
    and a receiver grants the rest of its own window as the stream opens."""
    import struct

    from flex.api.tunnel import DATA, OPEN, WINDOW, decode, encode

    out: asyncio.Queue[bytes] = asyncio.Queue()
    old_peer = Mux(out.put)
    s = await old_peer.open({"kind": "k"})
    assert [decode(await out.get())[0] for _ in range(2)] == [OPEN, WINDOW]
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await s.send(b"x" * MAX_MESSAGE)
            sent += MAX_MESSAGE

    flooder = asyncio.create_task(flood())
    await asyncio.sleep(0.05)
    assert sent == INITIAL_WINDOW and not flooder.done()
    flooder.cancel()

    back: asyncio.Queue[bytes] = asyncio.Queue()
    runner = Mux(back.put, lambda stream: asyncio.sleep(3600))  # type: ignore[arg-type,return-value]
    await runner.feed(encode(OPEN, 7, b"{}"))
    kind, sid, payload = decode(await back.get())
    assert (kind, sid, struct.unpack(">I", payload)[0]) == (WINDOW, 7, WINDOW_SIZE - INITIAL_WINDOW)
    await runner.feed(encode(DATA, 7, b"y" * MAX_MESSAGE))
    assert not runner.streams[7].closed
    runner.shutdown()
