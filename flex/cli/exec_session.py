"""One `flex exec` session over an open WebSocket: the request, our stdin (or a file) up, the command's stdout and
stderr down, a resize on SIGWINCH with a terminal, and its exit code. Imports neither typer nor httpx nor
pydantic, so the lean path (flex/cli/fast_exec.py) and the full command (flex/cli/exec.py) share it. The framing
is flex/api/access.py's (that module imports pydantic); tests/cli/test_fast_exec.py keeps the numbers equal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from typing import IO, Any, Protocol

__all__ = ["RESIZE", "STATUS", "STDERR", "STDIN", "STDOUT", "Connection", "carry", "terminal_size"]

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4
_CHUNK = 32 * 1024


class Connection(Protocol):
    """A WebSocket: `websockets`' sync client, or flex/cli/lean_ws.py's."""

    def send(self, message: bytes | str) -> None: ...
    def recv(self) -> bytes | str: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...


def terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(0)
        return size.columns, size.lines
    except OSError:
        return 80, 24


def _stdin_to(ws: Connection, stop: threading.Event) -> None:
    with contextlib.suppress(Exception):
        while not stop.is_set():
            data = os.read(0, _CHUNK)
            ws.send(bytes([STDIN]) + data)
            if not data:
                return


def _send_input(ws: Connection, data: IO[bytes]) -> None:
    with contextlib.suppress(Exception):
        while chunk := data.read(_CHUNK):
            ws.send(bytes([STDIN]) + chunk)
        ws.send(bytes([STDIN]))  # end of input


def carry(ws: Connection, closed: type[Exception], name: str, command: list[str], *, interactive: bool, tty: bool,
          input: IO[bytes] | None = None, out: IO[bytes] | None = None, err: IO[bytes] | None = None) -> int:
    """Run ``command`` over ``ws`` (closed on return; ``closed``: what it raises when the connection goes); its
    exit code, or the FlexError the runner reported."""
    from flex.errors import Unavailable, error_for_kind

    stop = threading.Event()
    request: dict[str, object] = {"command": command, "tty": tty, "stdin": interactive or input is not None}
    if tty:
        request["cols"], request["rows"] = terminal_size()
    with ws, contextlib.ExitStack() as stack:
        ws.send(json.dumps(request))  # an ExecRequest (flex/api/access.py)
        if tty:
            import termios
            import tty as tty_mode

            saved = termios.tcgetattr(0)
            tty_mode.setraw(0)
            stack.callback(termios.tcsetattr, 0, termios.TCSADRAIN, saved)

            def send_size() -> None:
                c, r = terminal_size()
                with contextlib.suppress(Exception):
                    ws.send(bytes([RESIZE]) + json.dumps({"cols": c, "rows": r}).encode())

            def resized(_sig: int, _frame: object) -> None:  # not from the handler: a send may be half done
                threading.Thread(target=send_size, daemon=True).start()

            old = signal.signal(signal.SIGWINCH, resized)
            stack.callback(signal.signal, signal.SIGWINCH, old)
        if input is not None:
            threading.Thread(target=_send_input, args=(ws, input), daemon=True).start()
        elif interactive:
            threading.Thread(target=_stdin_to, args=(ws, stop), daemon=True).start()
        out, err = out or sys.stdout.buffer, err or sys.stderr.buffer
        try:
            while True:
                message = ws.recv()
                if isinstance(message, str) or not message:
                    continue
                channel, payload = message[0], message[1:]
                if channel == STDOUT:
                    out.write(payload)
                    out.flush()
                elif channel == STDERR:
                    err.write(payload)
                    err.flush()
                elif channel == STATUS:
                    status = json.loads(payload)
                    if "exitCode" in status:
                        return int(status["exitCode"])
                    e = status.get("error") or {}
                    raise error_for_kind(str(e.get("kind", "Error")), str(e.get("message", "exec failed")),
                                         hint=e.get("hint"))
        except closed:
            raise Unavailable(f"the connection to environment {name!r} closed before the command ended",
                              hint="run it again; if the runner restarted, it reconnects within seconds") from None
        finally:
            stop.set()
