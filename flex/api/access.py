"""What a user's exec WebSocket carries (issue 15; docs/access.md has the framing byte by byte).

The first message from the client is text, an ``ExecRequest`` as JSON. Every later message either way is
binary: one channel byte, then the payload:

    0 stdin    client → environment; an empty payload closes the command's stdin
    1 stdout   environment → client
    2 stderr   environment → client (with a pty, everything comes on stdout)
    3 status   environment → client, the last message: JSON {"exitCode": n} or {"error": {kind, message, hint}}
    4 resize   client → environment: JSON {"cols": n, "rows": n} (with a pty only)
No I/O here.
"""

from __future__ import annotations

from pydantic import Field

from flex.api.wire import WireModel

__all__ = ["RESIZE", "STATUS", "STDERR", "STDIN", "STDOUT", "ExecRequest"]

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4


class ExecRequest(WireModel):
    command: list[str] = Field(min_length=1, max_length=4096)
    tty: bool = False
    stdin: bool = False
    cols: int | None = Field(None, ge=1, le=10000)
    rows: int | None = Field(None, ge=1, le=10000)
