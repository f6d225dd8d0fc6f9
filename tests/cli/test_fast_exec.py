"""`flex exec`'s lean path (flex/cli/fast_exec.py) leaves anything unusual to the full command, speaks the framing
of flex/api/access.py, and its WebSocket client (flex/cli/lean_ws.py, also `flex ssh --stdio`'s) holds up against a
real WebSocket server (the `websockets` package's), plain and over TLS: fragments, pings, big messages both ways,
the closing handshake, a refusal, a certificate nobody vouches for. Whole
sessions through `flex server` and a runner: tests/runner/test_access.py."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from flex.api import access
from flex.cli import exec_session
from flex.cli.fast_exec import fast_exec
from flex.cli.lean_ws import Closed, open_websocket


def test_the_framing_of_the_wire_contract() -> None:
    assert (exec_session.STDIN, exec_session.STDOUT, exec_session.STDERR, exec_session.STATUS,
            exec_session.RESIZE) == (access.STDIN, access.STDOUT, access.STDERR, access.STATUS, access.RESIZE)


def test_what_the_full_command_must_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("FLEX_URL", "http://127.0.0.1:1")  # nothing listens: the full command reports it (exit 6)
    monkeypatch.delenv("FLEX_DEBUG", raising=False)
    for argv in (["exec"], ["exec", "web"], ["exec", "web", "--"], ["exec", "--server", "http://x", "web", "true"],
                 ["exec", "--debug", "web", "true"], ["exec", "-h"], ["exec", "-x", "web", "true"],
                 ["exec", "-t", "web", "true"],  # pytest's stdin is no terminal: the full command says so
                 ["exec", "web", "--", "true"]):
        assert fast_exec(argv) is None, argv
    monkeypatch.setenv("FLEX_URL", "cp:8080")  # no scheme: the full command says so (exit 2)
    assert fast_exec(["exec", "web", "true"]) is None
    monkeypatch.setenv("FLEX_DEBUG", "1")
    assert fast_exec(["exec", "web", "true"]) is None


async def _handler(ws: ServerConnection) -> None:
    async for message in ws:
        if message == "fragments":
            await ws.send(["one ", "two ", "three"])  # one text message in three frames
        elif message == "ping":
            await ws.ping()
            await ws.send(b"after ping")
        elif message == "bye":
            await ws.close(4000, "bye now")
            return
        else:
            await ws.send(message)  # echo


@pytest.fixture(params=["http", "https"])
def ws_server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real WebSocket server on 127.0.0.1; over TLS with a certificate of its own, which the client trusts
    through SSL_CERT_FILE (as a private CA is given to every TLS client)."""
    tls = None
    if request.param == "https":
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                       check=True, capture_output=True)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    def refuse(_ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != "Bearer good":
            return _ws.respond(401, "no\n")
        return None

    async def main() -> None:
        async with serve(_handler, "127.0.0.1", 0, process_request=refuse, max_size=None, ssl=tls) as server:
            port.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop.wait()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(10)
    yield f"{request.param}://127.0.0.1:{port[0]}"
    loop.call_soon_threadsafe(stop.set)
    t.join(10)
    loop.close()


def test_lean_websocket_against_a_real_server(ws_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_websocket(ws_server, "/", "bad") is None  # a refusal: the full command reports it
    if ws_server.startswith("https://"):
        with monkeypatch.context() as m:
            m.setenv("SSL_CERT_FILE", "/dev/null")  # a certificate nobody vouches for: no connection
            assert open_websocket(ws_server, "/", "good") is None
    assert open_websocket("http://127.0.0.1:1", "/", "good") is None
    ws = open_websocket(ws_server, "/", "good")
    assert ws is not None
    with ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        for size in (0, 125, 126, 65535, 65536, 3 << 20):  # every length encoding, and masking of big ones
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv() == data
        ws.send("fragments")
        assert ws.recv() == "one two three"
        ws.send("ping")
        assert ws.recv() == b"after ping"
        ws.send("bye")
        with pytest.raises(Closed) as closed:
            ws.recv()
        assert (closed.value.code, closed.value.reason) == (4000, "bye now")
    ws = open_websocket(ws_server, "/", "good")
    assert ws is not None
    ws.shutdown()  # our close frame only: the server's answer ends the reader
    with pytest.raises(Closed) as closed:
        ws.recv()
    assert closed.value.code == 1000
    ws.close()
    with pytest.raises(Closed):
        ws.send(b"late")
