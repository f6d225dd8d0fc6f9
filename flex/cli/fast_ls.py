"""`flex ls` against the local daemon without typer, httpx or pydantic: a laptop's most frequent read answers in
the time of one HTTP request over the daemon's socket.

Only the plain table for the local daemon takes this path. Anything else — ``--json`` and other options, a
configured control plane, a daemon that does not answer, any status but 200 — returns None, and the full
command (flex/cli/envs.py) runs instead, printing the same table or the documented error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from flex.cli.fast_http import remote_configured, unix_get

__all__ = ["fast_ls", "table"]


def table(envs: list[dict[str, Any]]) -> list[str]:
    """The lines `flex ls` prints for these environments (wire form): NAME, PHASE, READY, SOURCE."""
    rows = [("NAME", "PHASE", "READY", "SOURCE")]
    for e in envs:
        meta, status, src = e.get("metadata") or {}, e.get("status") or {}, (e.get("spec") or {}).get("source") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        phase = "deleting" if meta.get("deleting") else str(status.get("phase") or "-")
        source = src.get("path") or (f"{src['git']}@{src['ref']}" if src.get("ref") else src.get("git") or "-")
        rows.append((str(meta.get("name")), phase, str(ready["status"]).lower() if ready else "-", str(source)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]


def _list(sock: str, token: str) -> list[dict[str, Any]] | None:
    envs: list[dict[str, Any]] = []
    cont: str | None = None
    while True:
        body = unix_get(sock, "/api/v1/environments?limit=100" + (f"&continue={quote(cont, safe='')}" if cont else ""),
                    token)
        if body is None:
            return None
        page = json.loads(body)
        envs.extend(page.get("items") or [])
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return envs


def fast_ls(argv: Sequence[str]) -> int | None:
    """``flex ls`` (no options) for the local daemon; None when the full command must answer."""
    if list(argv) != ["ls"] or remote_configured() or os.environ.get("FLEX_DEBUG") == "1":
        return None
    from flex.daemon.paths import DaemonPaths
    from flex.home import flex_home

    paths = DaemonPaths(flex_home())
    try:
        token = paths.token_file.read_text().strip()
        envs = _list(str(paths.socket), token)
    except (OSError, ValueError, IndexError):
        return None
    if envs is None:
        return None
    print("\n".join(table(envs)))
    return 0
