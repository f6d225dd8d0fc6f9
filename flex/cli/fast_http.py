"""One HTTP request over the local daemon's unix socket, by hand, for the CLI's lean paths (flex/cli/fast_ls.py,
flex/cli/fast_up.py): no typer, httpx or pydantic, and not even http.client (~50 ms of imports).
"""

from __future__ import annotations

import os
import socket

__all__ = ["remote_configured", "unix_get"]


def unix_get(sock_path: str, path: str, token: str) -> bytes | None:
    """One GET over the daemon's socket, HTTP/1.1: the body of a 200 answer with a Content-Length, else None
    (the full command then answers, with the documented error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: flex\r\nAuthorization: Bearer {token}\r\n"
                  "Accept: application/json\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split()[1:2] != ["200"]:
            return None
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        if "content-length" not in headers or headers.get("transfer-encoding"):
            return None
        want = int(headers["content-length"])
        while len(body) < want:
            chunk = s.recv(max(65536, want - len(body)))
            if not chunk:
                return None
            body += chunk
        return body[:want]


def remote_configured() -> bool:
    """What flex/cli/target.py's resolve() takes for a control plane: a URL or token, or a saved login."""
    if os.environ.get("FLEX_URL") or os.environ.get("FLEX_TOKEN"):
        return True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(base, "flex", "client.json"))
