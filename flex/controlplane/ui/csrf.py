"""Cross-site request forgery: every state-changing request of the UI must come from this origin and carry the
session's synchronizer token (a hidden ``_csrf`` field, or the ``X-CSRF-Token`` header for scripts).

Two independent checks, as OWASP recommends: the token (which another site cannot read), and the Fetch
Metadata / Origin headers browsers add (which another site cannot forge). SameSite=Strict cookies are a third.
Before a session exists (the sign-in form) a random cookie stands in for it (double submit).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from flex.errors import PermissionDenied

__all__ = ["SIGNIN_COOKIE", "check", "same_origin"]

SIGNIN_COOKIE = "flex_signin"


def same_origin(conn: HTTPConnection) -> bool:
    """False if the browser says the request comes from another site (Sec-Fetch-Site, then Origin)."""
    site = conn.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = conn.headers.get("origin")
    if origin is None:
        return site is not None or conn.headers.get("referer") is None or _same(conn.headers["referer"], conn)
    return origin != "null" and _same(origin, conn)


def _same(url: str, conn: HTTPConnection) -> bool:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)  # a WebSocket's page is http(s)
    return (parts.scheme, parts.netloc) == (scheme, conn.url.netloc)


def check(conn: HTTPConnection, expected: str, sent: str | None) -> None:
    if not same_origin(conn):
        raise PermissionDenied("cross-site request refused", hint="use the form on this server's own pages")
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PermissionDenied("this form has expired or did not come from this page (CSRF token mismatch)",
                               hint="reload the page and try again")
