"""A tiny Bearer token server for docker-registry's `auth: token:` mode: checks Basic credentials,
grants the requested repository actions, signs an RS256 JWT with a key whose self-signed certificate
is the registry's rootcertbundle (sent as x5c). ``lifetime`` is how long the registry accepts a token;
``report_lifetime`` says whether the answer tells the client (``expires_in``). An OAuth2 POST with
``grant_type=refresh_token`` is answered for ``identity_token``, as identity tokens from Docker
credential helpers are used."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import socketserver
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

# docker-registry accepts a token up to 60 s past its `exp` (clock-skew leeway; measured with 2.8.2)
REGISTRY_LEEWAY = 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, workdir: Path, username: str, password: str, service: str, issuer: str):
        self.username, self.password, self.service, self.issuer = username, password, service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flex-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, list[str]]] = []
        self.lifetime = 300
        self.report_lifetime = True
        self.identity_token: str | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                server.requests.append(query)
                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                self._grant(query.get("scope", []))

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                server.requests.append(form)
                if form.get("grant_type") != ["refresh_token"] or server.identity_token is None \
                        or form.get("refresh_token") != [server.identity_token]:
                    self.send_response(400)
                    self.end_headers()
                    return
                self._grant(form.get("scope", []))

            def _grant(self, scopes: list[str]) -> None:
                answer: dict[str, object] = {"token": server.sign(scopes)}
                if server.report_lifetime:
                    answer["expires_in"] = server.lifetime
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:  # HTTPServer's reverse lookup stalls without DNS
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            for part in scope.split(" "):
                kind, _, rest = part.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        exp = now + self.lifetime - REGISTRY_LEEWAY
        claims = {"iss": self.issuer, "sub": self.username, "aud": self.service, "exp": exp,
                  "nbf": min(now, exp) - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
