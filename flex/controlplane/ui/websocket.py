"""The browser's credential on a WebSocket: browsers cannot set an Authorization header on one, so the exec
(and port) WebSockets also accept the UI's session cookie, but only from this server's own pages.

A WebSocket handshake is not covered by CORS, and the cookie rides along from any page of the same *site*
(another port on the same host is the same site, so SameSite=Strict does not stop it). The Origin header,
which every browser sends on a handshake and no page can forge, is the check; a handshake without one is no
browser's, and must use a token instead.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from flex.controlplane.auth import Principal
from flex.controlplane.ui.csrf import same_origin
from flex.controlplane.ui.sessions import COOKIE, session_user
from flex.errors import PermissionDenied, Unauthenticated

__all__ = ["cookie_principal", "has_cookie"]


def has_cookie(conn: HTTPConnection) -> bool:
    """True if this handshake carries no token but the UI's session cookie (then use cookie_principal)."""
    return "authorization" not in conn.headers and COOKIE in conn.cookies


async def cookie_principal(conn: HTTPConnection) -> Principal:
    """The signed-in user of a WebSocket opened from this server's own page; refuses any other origin."""
    if conn.headers.get("origin") is None or not same_origin(conn):
        raise PermissionDenied("a WebSocket from another site (or with no Origin) cannot use the browser session",
                               hint="open it from this server's pages, or pass 'Authorization: Bearer <token>'")
    who = await session_user(conn)
    if who is None:
        raise Unauthenticated("the browser session has ended", hint="sign in again")
    return who
