"""A WebSocket client (RFC 6455) on a plain socket, for the lean paths of `flex exec` and `flex ssh --stdio`: the
`websockets` package costs ~45 ms of imports (it loads importlib.metadata, email and logging), a third of a
whole `flex exec`.

Only what their streams need: the upgrade (a refusal returns None, and the full command says why), whole
messages (fragments joined), pings answered, the closing handshake. http:// and https:// (the ssl module's
default context: the system's CA certificates, or SSL_CERT_FILE, and the host name checked), and the daemon's
unix socket. Sends are whole frames under a lock, so one thread may send while another receives."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from types import TracebackType

__all__ = ["Closed", "LeanWebSocket", "open_websocket"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The connection closed (``code`` 1006: without a closing handshake)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"closed ({code}) {reason}".strip())
        self.code, self.reason = code, reason


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


class LeanWebSocket:
    def __init__(self, sock: socket.socket, rest: bytes, headers: dict[str, str]) -> None:
        self.sock, self.headers = sock, headers  # the upgrade's response headers, names in lower case
        self._buf = bytearray(rest)
        self._send_lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> LeanWebSocket:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise Closed()
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        key = os.urandom(4)
        with self._send_lock:
            self.sock.sendall(head + key + _mask(payload, key))

    def send(self, message: bytes | str) -> None:
        if self._closed:
            raise Closed(1000)
        if isinstance(message, str):
            self._frame(_TEXT, message.encode())
        else:
            self._frame(_BINARY, bytes(message))

    def recv(self) -> bytes | str:
        """The next whole message; Closed when the server closed (its code and reason)."""
        parts: list[bytes] = []
        kind = _BINARY
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            key = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if key:
                payload = _mask(payload, key)
            if opcode == _PING:
                self._frame(_PONG, payload)
            elif opcode == _CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self._reply_close(payload[:2])
                raise Closed(code, payload[2:].decode(errors="replace"))
            elif opcode in (_TEXT, _BINARY, _CONT):
                if opcode != _CONT:
                    kind = opcode
                parts.append(payload)
                if b0 & 0x80:
                    data = b"".join(parts)
                    return data.decode() if kind == _TEXT else data

    def _reply_close(self, code: bytes) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._frame(_CLOSE, code)

    def shutdown(self) -> None:
        """Our close frame only: the thread in ``recv`` gets the server's answer, as Closed(1000)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self._frame(_CLOSE, struct.pack("!H", 1000))

    def close(self) -> None:
        """The closing handshake: our close frame, then the server's (at most 5 s), then the socket."""
        try:
            if not self._closed:
                self._closed = True
                self._frame(_CLOSE, struct.pack("!H", 1000))
                self.sock.settimeout(5)
                while True:
                    self.recv()
        except (Closed, OSError):
            pass
        finally:
            self.sock.close()


def _open(server: str, timeout: float) -> tuple[socket.socket, str]:
    if server.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(server[len("unix:"):])
        except OSError:
            sock.close()
            raise
        return sock, "flex"
    scheme, _, rest = server.partition("://")
    if scheme not in ("http", "https"):
        raise ValueError(server)
    host = rest.split("/", 1)[0]
    name, colon, port = host.rpartition(":")
    if not colon or name.endswith(":") or (host.startswith("[") and not name.endswith("]")):
        name, port = host, ""  # no port (an IPv6 address's colons are not one)
    hostname = name.strip("[]")
    sock = socket.create_connection((hostname, int(port or (443 if scheme == "https" else 80))), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "https":
        import ssl

        try:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=hostname)
        except BaseException:
            sock.close()
            raise
    return sock, host


def open_websocket(server: str, path: str, token: str | None, timeout: float = 30) -> LeanWebSocket | None:
    """The upgraded connection to ``path`` on ``server`` (http://, https:// or unix:); None on any refusal or
    failure (the full command then says which)."""
    try:
        sock, host = _open(server, timeout)
    except (OSError, ValueError):
        return None
    try:
        key = base64.b64encode(os.urandom(16))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk or len(data) > 1 << 16:
                raise OSError("no upgrade")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if lines[0].split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != accept:
            raise OSError("refused")
        sock.settimeout(None)
        return LeanWebSocket(sock, rest, headers)
    except (OSError, ValueError):
        sock.close()
        return None
