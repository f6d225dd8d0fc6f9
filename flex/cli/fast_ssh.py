"""`flex ssh --stdio ENV` (what ssh's ProxyCommand runs, on every ssh, scp and sftp) without typer, httpx or
pydantic: the target's URL and token from FLEX_URL/FLEX_TOKEN, the saved `flex login` or the local daemon's
socket, as flex/cli/target.py decides, then the WebSocket of flex/cli/lean_ws.py (not even `websockets`).

Anything unusual returns None before a byte is carried, and the full command (flex/cli/ssh.py) runs instead:
other options, FLEX_DEBUG, a server URL without a scheme (or none beside a saved login), no running daemon, and
any refusal of the upgrade (the full command then reports it as the documented error and exit code).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence

from flex.cli.fast_target import config_dir, target

__all__ = ["fast_ssh_stdio"]

_HOST_KEY_HEADER = "X-Flex-Ssh-Host-Key"  # flex.cli.ssh.HOST_KEY_HEADER (that module imports typer)
_HINT = "the runner may be restarting; connect again in a few seconds"


def _fail(message: str) -> int:
    """What flex/cli/main.py's report() prints for flex.errors.Unavailable, and its exit code."""
    os.write(2, f"error: {message}\nhint: {_HINT}\n".encode())
    return 6


def fast_ssh_stdio(argv: Sequence[str]) -> int | None:
    """``flex ssh --stdio [--server URL] NAME``: carry stdin and stdout to the environment's SSH server; None
    when the full command must run."""
    args = list(argv)
    server = None
    if len(args) == 5 and args[2] == "--server":  # what `flex config-ssh --server URL` writes
        server = args[3]
        del args[2:4]
    if len(args) != 3 or args[:2] != ["ssh", "--stdio"] or args[2].startswith("-"):
        return None
    if os.environ.get("FLEX_DEBUG") == "1":
        return None
    name = args[2].removesuffix(".flex")
    found = target(server)
    if found is None or not name:
        return None
    from urllib.parse import quote

    from flex.cli.lean_ws import Closed, open_websocket

    ws = open_websocket(found[0], f"/api/v1/environments/{quote(name, safe='')}/ssh", found[1])
    if ws is None:
        return None
    key = ws.headers.get(_HOST_KEY_HEADER.lower())
    if key:
        from pathlib import Path

        from flex.cli.ssh_config import remember_host_key

        remember_host_key(name, key, Path(config_dir()) / "ssh" / "known_hosts")  # known_hosts_path()

    def up() -> None:
        with contextlib.suppress(Exception):
            while data := os.read(0, 64 * 1024):
                ws.send(data)
        ws.shutdown()  # our end of input: the server closes, and the loop below ends

    threading.Thread(target=up, name="stdin", daemon=True).start()
    try:
        while True:
            message = ws.recv()
            if isinstance(message, bytes):
                view = memoryview(message)
                while view:
                    view = view[os.write(1, view):]
    except Closed as closed:
        if closed.code == 1000 or (closed.code in (1001, 1005) and not closed.reason):
            return 0  # a normal close (as the `websockets` package tells them)
        return _fail(closed.reason or "the SSH connection to the environment broke off")
    except BrokenPipeError:
        return 0
