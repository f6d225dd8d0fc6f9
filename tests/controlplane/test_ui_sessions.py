"""Web UI sessions without a browser, on SQLite and PostgreSQL: signing in makes a server-side session that
session_user() (what browser WebSockets of other routes call) resolves, sign-out ends it; the origin checks;
and over TLS the cookie is Secure."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx
from starlette.requests import HTTPConnection

from flex.controlplane.ui import COOKIE, session_user
from flex.controlplane.ui.csrf import same_origin
from tests.controlplane.conftest import Api
from tests.controlplane.server_process import make_certificate, start

ORIGIN = "http://flex.test"


async def _sign_in(web: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await web.get("/signin")
    pre = re.search(r'name="_csrf" value="([^"]+)"', form.text)
    assert pre is not None
    return await web.post("/signin", data={"_csrf": pre.group(1), "token": token, "next": "/tokens"},
                          headers={"Origin": ORIGIN})


def _conn(api: Api, cookie: str | None, kind: str = "http", origin: str = ORIGIN) -> HTTPConnection:
    headers = [(b"host", b"flex.test"), (b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    return HTTPConnection({"type": kind, "app": api.app, "headers": headers, "path": "/ws", "query_string": b"",
                           "scheme": "ws" if kind == "websocket" else "http", "server": ("flex.test", 80)})


async def test_session_user_resolves_a_signed_in_browser_until_it_signs_out(api: Api) -> None:
    web = api.raw()
    r = await _sign_in(web, api.admin_token)
    assert r.status_code == 303 and r.headers["location"] == "/tokens"
    set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Secure" not in set_cookie
    cookie = web.cookies[COOKIE]
    who = await session_user(_conn(api, cookie, "websocket"))
    assert who is not None and who.name == "admin" and who.admin and who.scopes == {"read", "write"}
    assert await session_user(_conn(api, "forged-" + cookie)) is None
    assert await session_user(_conn(api, None)) is None
    assert (await web.get("/signin")).headers["location"] == "/"  # signed in already: no second sign-in form

    page = await web.get("/tokens")
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    refused = await web.post("/signout", data={"_csrf": csrf.group(1)},
                             headers={"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and await session_user(_conn(api, cookie)) is not None
    out = await web.post("/signout", data={"_csrf": csrf.group(1)}, headers={"Origin": ORIGIN})
    assert out.status_code == 303
    assert await session_user(_conn(api, cookie)) is None


async def test_a_sign_in_needs_the_forms_token_and_this_origin(api: Api) -> None:
    web = api.raw()
    no_token = await web.post("/signin", data={"token": api.admin_token}, headers={"Origin": ORIGIN})
    assert no_token.status_code == 403 and COOKIE not in web.cookies
    web.cookies.clear()
    await web.get("/signin")
    pre = web.cookies["flex_signin"]
    elsewhere = await web.post("/signin", data={"_csrf": pre, "token": api.admin_token},
                               headers={"Origin": "http://evil.test"})
    assert elsewhere.status_code == 403 and COOKIE not in web.cookies
    redirect = await web.post("/signin", data={"_csrf": pre, "token": api.admin_token, "next": "//evil.test/x"},
                              headers={"Origin": ORIGIN})
    assert redirect.status_code == 303 and redirect.headers["location"] == "/"  # no open redirect


def test_same_origin_for_websockets(api: Api) -> None:
    assert same_origin(_conn(api, None, "websocket"))
    assert not same_origin(_conn(api, None, "websocket", origin="http://evil.test"))


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    ca, cert, key = make_certificate(tmp_path / "tls")
    trust = ssl.create_default_context(cafile=str(ca))
    server = start(tmp_path / "home", "--tls-cert", str(cert), "--tls-key", str(key), verify=trust, https=True)
    try:
        with httpx.Client(base_url=server.url, verify=trust) as web:
            pre = re.search(r'name="_csrf" value="([^"]+)"', web.get("/signin").text)
            assert pre is not None
            r = web.post("/signin", data={"_csrf": pre.group(1), "token": server.admin_token},
                         headers={"Origin": server.url})
            assert r.status_code == 303
            set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
            assert "Secure" in set_cookie and "HttpOnly" in set_cookie
    finally:
        server.stop()
