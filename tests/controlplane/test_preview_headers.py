"""What the preview proxy passes on (flex/controlplane/preview/headers.py; issue 15): the app never sees flex's
cookies or tokens or a client's forged X-Forwarded-*, and the browser gets the app's cookies and redirects
back inside the preview path."""

from __future__ import annotations

from flex.controlplane.preview.headers import to_app, to_browser
from flex.controlplane.preview.target import parse_preview_path

PREFIX = "/p/alice/web/3000/"


def _app(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    out = to_app(headers, port=3000, host="flex.example", proto="https", prefix=PREFIX, client="192.0.2.7")
    return dict(out)


def test_the_app_sees_its_own_host_where_it_was_reached_and_no_flex_credentials() -> None:
    seen = _app([(b"Host", b"flex.example"), (b"Cookie", b"flex_session=s; a=1; flex_preview=p; b=2"),
                 (b"Authorization", b"Bearer flexu_secret"), (b"X-Forwarded-For", b"10.6.6.6"),
                 (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Accept", b"*/*")])
    assert seen == {b"host": b"localhost:3000", b"cookie": b"a=1; b=2", b"accept": b"*/*",
                    b"x-forwarded-host": b"flex.example", b"x-forwarded-proto": b"https",
                    b"x-forwarded-prefix": b"/p/alice/web/3000", b"x-forwarded-for": b"192.0.2.7"}
    # only flex cookies: no Cookie header at all; the app's own Authorization passes
    assert b"cookie" not in _app([(b"cookie", b"flex_session=s")])
    assert _app([(b"authorization", b"Basic dTpw")])[b"authorization"] == b"Basic dTpw"


def test_the_browser_gets_cookies_and_redirects_inside_the_preview_path() -> None:
    back = to_browser([(b"Set-Cookie", b"sid=1; Path=/; Domain=localhost; HttpOnly"),
                       (b"set-cookie", b"deep=2; Path=/api"), (b"set-cookie", b"flex_session=evil; Path=/"),
                       (b"set-cookie", b"ok=3; Path=/p/alice/web/3000/x"), (b"Transfer-Encoding", b"chunked"),
                       (b"Location", b"/login")], port=3000, prefix=PREFIX)
    assert back == [(b"set-cookie", b"sid=1; HttpOnly; Path=/p/alice/web/3000/"),
                    (b"set-cookie", b"deep=2; Path=/p/alice/web/3000/api"),
                    (b"set-cookie", b"ok=3; Path=/p/alice/web/3000/x"),
                    (b"location", b"/p/alice/web/3000/login")]

    def location(value: str) -> bytes:
        return dict(to_browser([(b"location", value.encode())], port=3000, prefix=PREFIX))[b"location"]

    assert location("http://localhost:3000/a?b") == b"/p/alice/web/3000/a?b"
    assert location("/p/alice/web/3000/already") == b"/p/alice/web/3000/already"
    assert location("https://elsewhere.example/x") == b"https://elsewhere.example/x"
    assert location("http://localhost:8080/") == b"http://localhost:8080/"
    assert location("relative/page") == b"relative/page"


def test_preview_paths() -> None:
    assert parse_preview_path("/p/alice/web/3000/x/y") == ("alice", "web", 3000, "/x/y")
    assert parse_preview_path("/p/alice/web/3000") == ("alice", "web", 3000, "")
    for bad in ("/p/alice/web/0/", "/p/alice/web/65536/", "/p/Alice/web/3000/", "/p/alice/../3000/", "/p/alice/web/"):
        assert parse_preview_path(bad) is None, bad
