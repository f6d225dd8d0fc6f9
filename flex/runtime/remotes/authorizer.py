"""Per-registry auth state: answers ``WWW-Authenticate`` challenges and keeps bearer tokens fresh.

``Basic``: resend with the credentials. ``Bearer``: fetch a token from the realm for the request's scope
(GET with Basic credentials, or — for an identity token from a credential helper — the OAuth2
``refresh_token`` POST), cache it per scope with its lifetime (``expires_in``, 60 s when absent, as the
distribution token spec says) and fetch a new one shortly before it runs out: Docker Hub's tokens live
300 s, shorter than a large pull. A token the registry refuses anyway (revoked, clock skew) is dropped
and fetched again once. Credentials are looked up only when a challenge asks for them, so a registry
that needs none never runs a credential helper. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from flex.errors import Unauthenticated, Unavailable
from flex.runtime.remotes.auth import IDENTITY_TOKEN_USER, Challenge, Credentials, parse_challenge

__all__ = ["Authorizer", "basic_header"]

_DEFAULT_LIFETIME = 60.0  # distribution token spec: "if not specified, assume 60 seconds"
_REFRESH_MARGIN = 10.0  # renew this long before the end (at most half the lifetime)


@dataclass
class _Token:
    value: str
    renew_at: float  # time.monotonic()


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


class Authorizer:
    """Thread-safe: concurrent layer fetches share one."""

    def __init__(self, host: str, client: httpx.Client, credentials: Callable[[], Credentials | None]):
        self.host = host
        self._client = client
        self._lookup = credentials
        self._creds: Credentials | None = None
        self._looked_up = False
        self._basic = False
        self._bearer: Challenge | None = None  # the last bearer challenge: where to renew tokens
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()

    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._looked_up:
                self._creds = self._lookup()
                self._looked_up = True
            return self._creds

    def header(self, scope: str) -> dict[str, str]:
        """The Authorization header for a request in ``scope``, renewing an expiring token first."""
        with self._lock:
            tok = self._tokens.get(scope)
            bearer = self._bearer
            basic = self._basic and self._creds is not None
        if tok is not None and time.monotonic() >= tok.renew_at and bearer is not None:
            tok = self._fetch(bearer, scope)
        if tok is not None:
            return {"Authorization": f"Bearer {tok.value}"}
        if basic and self._creds is not None:
            return {"Authorization": basic_header(self._creds)}
        return {}

    def answer(self, resp: httpx.Response, scope: str) -> bool:
        """React to a 401; True if a retry with new credentials makes sense."""
        challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            creds = self.credentials()
            with self._lock:
                if self._basic or creds is None:
                    return False
                self._basic = True
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return False
        with self._lock:
            self._bearer = challenge
            self._tokens.pop(scope, None)  # refused (expired early, revoked): fetch a new one once
        self._fetch(challenge, scope)
        return True

    def _fetch(self, challenge: Challenge, scope: str) -> _Token:
        realm = challenge.params["realm"]
        creds = self.credentials()
        service = challenge.params.get("service")
        try:
            if creds is not None and creds.username == IDENTITY_TOKEN_USER:
                form = {"grant_type": "refresh_token", "refresh_token": creds.password, "client_id": "flex",
                        "scope": scope, **({"service": service} if service else {})}
                tok = self._client.post(realm, data=form)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = \
                    [("service", service)] if service else []
                params += [("scope", part) for part in scope.split()]  # one scope parameter per resource
                headers = {"Authorization": basic_header(creds)} if creds else {}
                tok = self._client.get(realm, params=params, headers=headers)
        except httpx.HTTPError as err:
            raise Unavailable(f"{self.host}: token server {realm} unreachable: {err}") from err
        if tok.status_code in (401, 403) or (tok.status_code == 400 and creds is not None):
            raise Unauthenticated(f"{self.host}: the token server refused the credentials",
                                  hint=f"run `flex image login {self.host}` or check ~/.docker/config.json")
        if tok.status_code != 200:
            raise Unavailable(f"{self.host}: token server answered HTTP {tok.status_code}")
        try:
            body = tok.json()
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or _DEFAULT_LIFETIME)
        except (ValueError, TypeError, AttributeError):
            value, lifetime = None, _DEFAULT_LIFETIME
        if not value:
            raise Unavailable(f"{self.host}: token server sent no token")
        # measured from when the answer arrived, so a server clock ahead of ours cannot make it look fresh
        token = _Token(str(value), time.monotonic() + lifetime - min(_REFRESH_MARGIN, lifetime / 2))
        with self._lock:
            self._tokens[scope] = token
        return token
