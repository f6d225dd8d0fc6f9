"""What the preview proxy changes in the headers it passes on (issue 15; docs/access.md, "Preview URLs").

Towards the app: hop-by-hop headers go (RFC 9110 §7.6.1, and whatever ``Connection`` names); flex's own
cookies (``flex_*``: the preview credential, the web UI session) and a flex bearer token never reach it, as
the app may be anyone's code; ``Host`` becomes ``localhost:PORT`` (what a dev server's host check allows)
and ``X-Forwarded-Host``/``-Proto``/``-Prefix``/``-For`` tell it where it was reached.
Towards the browser: the app's cookies are kept inside its preview path (the page shares the control
plane's origin), a ``Location`` on the app's own origin or an absolute path is put under the prefix.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["FLEX_COOKIE_PREFIX", "HOP_BY_HOP", "to_app", "to_browser"]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
FLEX_COOKIE_PREFIX = "flex_"
_FLEX_TOKENS = (b"bearer flexu_", b"bearer flexr_", b"bearer flexj_")
_FORWARDED = (b"x-forwarded-", b"forwarded", b"x-real-ip")
Headers = list[tuple[bytes, bytes]]


def _named_by_connection(headers: Headers) -> set[bytes]:
    out: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            out |= {v.strip().lower() for v in value.split(b",") if v.strip()}
    return out


def _cookies_without_flex(value: bytes) -> bytes:
    kept = [c.strip() for c in value.split(b";")
            if c.strip() and not c.strip().startswith(FLEX_COOKIE_PREFIX.encode())]
    return b"; ".join(kept)


def to_app(headers: Headers, *, port: int, host: str, proto: str, prefix: str, client: str,
           keep_body_framing: bool = True) -> Headers:
    """The request headers the app sees. ``keep_body_framing``: keep Transfer-Encoding (h11 re-frames it)."""
    drop = HOP_BY_HOP | _named_by_connection(headers) | {b"host"}
    out: Headers = []
    for name, value in headers:
        low = name.lower()
        if low == b"transfer-encoding" and keep_body_framing:
            out.append((low, value))
            continue
        if low in drop or low.startswith(_FORWARDED):
            continue
        if low == b"authorization" and value.lower().startswith(_FLEX_TOKENS):
            continue
        if low == b"cookie":
            value = _cookies_without_flex(value)
            if not value:
                continue
        out.append((low, value))
    out[:0] = [(b"host", f"localhost:{port}".encode())]
    out += [(b"x-forwarded-host", host.encode()), (b"x-forwarded-proto", proto.encode()),
            (b"x-forwarded-prefix", prefix.rstrip("/").encode()), (b"x-forwarded-for", client.encode())]
    return out


def _scoped_cookie(value: bytes, prefix: str) -> bytes | None:
    """A Set-Cookie kept under ``prefix`` (its Path rebased, any Domain dropped); None for a flex_* name."""
    parts = [p.strip() for p in value.decode("latin-1").split(";")]
    if parts[0].startswith(FLEX_COOKIE_PREFIX):
        return None
    path = "/"
    attrs = [parts[0]]
    for attr in parts[1:]:
        key = attr.partition("=")[0].strip().lower()
        if key == "path":
            path = attr.partition("=")[2].strip() or "/"
        elif key != "domain":
            attrs.append(attr)
    if not path.startswith(prefix.rstrip("/") + "/") and path != prefix.rstrip("/"):
        path = prefix.rstrip("/") + "/" + path.lstrip("/")
    attrs.append(f"Path={path}")
    return "; ".join(attrs).encode("latin-1")


def _location(value: bytes, port: int, prefix: str) -> bytes:
    text = value.decode("latin-1")
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname in ("localhost", "127.0.0.1") \
            and (parts.port or (443 if parts.scheme == "https" else 80)) == port:
        text = text[len(f"{parts.scheme}://{parts.netloc}"):] or "/"
    elif parts.scheme or parts.netloc or not text.startswith("/"):
        return value  # elsewhere, or relative to the page: already right
    if text == prefix.rstrip("/") or text.startswith(prefix.rstrip("/") + "/"):
        return text.encode("latin-1")  # the app knows its prefix (X-Forwarded-Prefix)
    return (prefix.rstrip("/") + text).encode("latin-1")


def to_browser(headers: Headers, *, port: int, prefix: str) -> Headers:
    """The response headers the browser sees."""
    drop = HOP_BY_HOP | _named_by_connection(headers)
    out: Headers = []
    for name, value in headers:
        low = name.lower()
        if low in drop:
            continue
        if low == b"set-cookie":
            scoped = _scoped_cookie(value, prefix)
            if scoped is not None:
                out.append((low, scoped))
            continue
        if low in (b"location", b"content-location"):
            value = _location(value, port, prefix)
        out.append((low, value))
    return out
