"""Security headers on every UI answer: a Content-Security-Policy that allows only this server's own scripts and
styles (no inline script, no eval), no framing, no sniffing, no referrer. Not on the API, the health and metrics
endpoints, or FastAPI's own /docs and /redoc (their pages are FastAPI's, with its inline script)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "SecurityHeaders"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin")]
_PAGE_ONLY = [(b"cache-control", b"no-store")]
_NOT_UI = ("/api/", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics", "/p/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_NOT_UI):
            await self.app(scope, receive, send)
            return
        extra = _HEADERS if path.startswith("/static/") else _HEADERS + _PAGE_ONLY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in have]
            await send(message)

        await self.app(scope, receive, with_headers)
