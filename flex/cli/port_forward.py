"""`flex port-forward ENV [LOCAL:]REMOTE...`: listen on 127.0.0.1:LOCAL (LOCAL defaults to REMOTE; 0 picks a
free port) and carry each connection to REMOTE inside the environment over a WebSocket, through the control
plane and the runner's tunnel (as `kubectl port-forward` and `gh codespace ports forward` do), until
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import typer

from flex.cli.env import _DEBUG, _SERVER, _TOKEN

__all__ = ["forward", "parse_mapping", "register"]


def parse_mapping(text: str) -> tuple[int, int]:
    """``"8080:3000"`` → (8080, 3000); ``"3000"`` → (3000, 3000)."""
    from flex.errors import UsageError

    local, sep, remote = text.rpartition(":")
    try:
        lport, rport = (int(local) if sep else int(remote)), int(remote)
    except ValueError:
        raise UsageError(f"{text!r}: expected [LOCAL:]REMOTE, e.g. 8080:3000") from None
    if not (0 <= lport < 65536 and 0 < rport < 65536):
        raise UsageError(f"{text!r}: ports are 1-65535 (LOCAL may be 0: any free port)")
    return lport, rport


async def _pipe(server: str, token: str | None, name: str, remote: int, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    from websockets.asyncio.client import connect, unix_connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    from flex.client.access import ws_url
    from flex.client.client import unix_socket

    url = ws_url(server, f"/api/v1/environments/{name}/ports/{remote}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        sock = unix_socket(server)
        opened = unix_connect(sock, url, additional_headers=headers, max_size=1 << 20, compression=None) \
            if sock is not None else \
            connect(url, additional_headers=headers, max_size=1 << 20, proxy=None, compression=None)
        async with opened as ws:

            async def up() -> None:
                while data := await reader.read(256 * 1024):  # the tunnel's MAX_MESSAGE: one frame each
                    await ws.send(data)

            async def down() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        writer.write(message)
                        await writer.drain()

            tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
    except InvalidStatus as err:
        body = bytes(err.response.body or b"")
        print(f"error: port {remote}: {_message(body) or err}", file=sys.stderr)
    except (OSError, WebSocketException) as err:
        print(f"error: port {remote}: {err}", file=sys.stderr)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _message(body: bytes) -> str:
    import json

    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(body).get("message") or "")
    return ""


async def forward(server: str, token: str | None, name: str, mappings: list[tuple[int, int]],
                  ready: asyncio.Event | None = None) -> None:
    servers = []
    for local, remote in mappings:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, remote: int = remote) -> None:
            await _pipe(server, token, name, remote, r, w)

        try:
            srv = await asyncio.start_server(handle, "127.0.0.1", local)
        except OSError as err:
            from flex.errors import Unavailable

            raise Unavailable(f"cannot listen on 127.0.0.1:{local}: {err.strerror}",
                              hint="pick another local port: LOCAL:REMOTE") from None
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        print(f"Forwarding from 127.0.0.1:{port} -> {name}:{remote}", flush=True)
    if ready is not None:
        ready.set()
    await asyncio.gather(*(s.serve_forever() for s in servers))


def register(app: typer.Typer) -> None:
    @app.command("port-forward")
    def port_forward(
        name: str = typer.Argument(..., help="Environment name."),
        ports: list[str] = typer.Argument(..., help="[LOCAL:]REMOTE, one or more."),
        server: str = _SERVER, token: str = _TOKEN, debug: bool = _DEBUG,
    ) -> None:
        """Forward local ports to ports inside an environment, until interrupted."""
        from flex.cli.target import endpoint
        from flex.client import FlexClient

        mappings = [parse_mapping(p) for p in ports]
        url, tok = endpoint(server, token)
        with FlexClient(url, tok) as c:
            c.get_environment(name)  # a wrong name fails here, not on the first connection
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(forward(url, tok, name, mappings))
