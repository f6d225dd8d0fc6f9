"""An HTTP proxy in front of the real docker-registry that breaks blob downloads off for real: it sends
the registry's status and headers, then only the first ``cut_after`` bytes of a blob's body, and then
closes the connection (``cuts`` times), or holds it open until released (``stall``) so that a test can
kill the client mid-download; ``drop_range`` makes it a server that ignores Range requests. Records
each blob request's Range header and the body bytes it sent."""

from __future__ import annotations

import http.server
import socketserver
import threading
from dataclasses import dataclass

import httpx


@dataclass
class BlobRequest:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


class CutProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.cut_after = 1 << 20
        self.cuts = 0
        self.stall = False
        self.drop_range = False  # forward without the Range header, as a server without Range support answers
        self.stalled = threading.Event()  # set when a download is being held
        self.release = threading.Event()
        self.blobs: list[BlobRequest] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                dropped = ("host", "connection", "range") if proxy.drop_range else ("host", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                blob = "/blobs/sha256:" in self.path and self.command == "GET"
                record = BlobRequest(self.path, self.headers.get("Range")) if blob else None
                if record is not None:
                    proxy.blobs.append(record)
                with httpx.Client(timeout=60) as client, client.stream(
                        self.command, f"http://{proxy.upstream}{self.path}", headers=headers, content=body) as up:
                    self.send_response(up.status_code)
                    for k, v in up.headers.items():
                        if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                            self.send_header(k, v)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    cut = record is not None and up.status_code in (200, 206) and (proxy.cuts > 0 or proxy.stall)
                    if record is not None:
                        record.status = up.status_code
                    for chunk in up.iter_raw(64 << 10):
                        if cut and record is not None and record.sent + len(chunk) > proxy.cut_after:
                            chunk = chunk[:proxy.cut_after - record.sent]
                            self.wfile.write(chunk)
                            record.sent += len(chunk)
                            self.wfile.flush()
                            if proxy.stall:
                                proxy.stalled.set()
                                proxy.release.wait(120)
                            else:
                                proxy.cuts -= 1
                            break
                        self.wfile.write(chunk)
                        if record is not None:
                            record.sent += len(chunk)
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:  # HTTPServer's reverse lookup stalls without DNS
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def sent_for(self, digest: str) -> int:
        return sum(r.sent for r in self.blobs if r.path.endswith(digest))

    def ranges_for(self, digest: str) -> list[str | None]:
        return [r.range for r in self.blobs if r.path.endswith(digest)]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
