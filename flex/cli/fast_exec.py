"""`flex exec [-i] [-t] ENV [--] CMD...` without typer, httpx, pydantic or `websockets`: the target as
flex/cli/fast_target.py finds it, a WebSocket of flex/cli/lean_ws.py, and the session (flex/cli/exec_session.py)
the full command has too.

Anything unusual returns None before the command runs, and the full command (flex/cli/exec.py) runs instead:
other options (--server, --token, --debug, --help), FLEX_DEBUG, -t without a terminal, no command, a target the
full command would question, and any refusal of the upgrade (it then reports the documented error).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["fast_exec"]

_FLAGS = {"-i": "i", "--interactive": "i", "-t": "t", "--tty": "t", "-it": "it", "-ti": "it"}


def fast_exec(argv: Sequence[str]) -> int | None:
    """The command's exit code; None when the full command must run. A FlexError once the session is open."""
    if argv[:1] != ["exec"] or os.environ.get("FLEX_DEBUG") == "1":
        return None
    args, flags = list(argv[1:]), ""
    while args and args[0].startswith("-"):
        if args[0] not in _FLAGS:
            return None
        flags += _FLAGS[args.pop(0)]
    if len(args) < 2:
        return None
    name, command = args[0], args[1:]
    if command[:1] == ["--"]:  # options end at NAME; a "--" after it is the usual spelling (as flex/cli/exec.py)
        command = command[1:]
    tty = "t" in flags
    if not command or (tty and not sys.stdin.isatty()):
        return None
    from flex.cli.fast_target import target

    found = target(None)
    if found is None:
        return None
    from urllib.parse import quote

    from flex.cli.exec_session import carry
    from flex.cli.lean_ws import Closed, open_websocket

    ws = open_websocket(found[0], f"/api/v1/environments/{quote(name, safe='')}/exec", found[1])
    return None if ws is None else carry(ws, Closed, name, command, interactive="i" in flags, tty=tty)
