"""What every UI route shares: the route class that turns errors into pages, the signed-in check, forms."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from flex.controlplane.routes.deps import ControlPlane
from flex.controlplane.ui import csrf
from flex.controlplane.ui.render import page
from flex.controlplane.ui.sessions import UiSession, current
from flex.errors import FlexError, PermissionDenied, Unauthenticated

__all__ = ["SignInRequired", "UiRoute", "cp_of", "done", "read_form", "signed_in", "signed_in_admin"]


class SignInRequired(Exception):
    pass


_TITLES = {400: "That did not work", 401: "Please sign in", 403: "Not allowed", 404: "Not found",
           409: "Conflict", 412: "Not possible right now", 422: "That did not work", 429: "Slow down",
           503: "Unavailable"}


class UiRoute(APIRoute):
    """Answers a FlexError with a page saying what happened and what to do (the API answers JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except SignInRequired:
                if request.method == "GET" and not request.headers.get("hx-request"):
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
                err = Unauthenticated("you are not signed in (or your session ended)", hint="sign in again")
                return page(request, "error.html", 401, err=err, title=_TITLES[401])
            except FlexError as err:
                status = err.http_status
                return page(request, "error.html", status, err=err, title=_TITLES.get(status, "Error"))

        return handler


def cp_of(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


async def signed_in(request: Request) -> UiSession:
    session = await current(request)
    if session is None:
        raise SignInRequired
    request.state.ui_session = session
    return session


async def signed_in_admin(request: Request) -> UiSession:
    session = await signed_in(request)
    if not session.who.admin:
        raise PermissionDenied("only an admin may see this page", hint="ask an admin of this installation")
    return session


async def read_form(request: Request, session: UiSession | None, expected: str | None = None) -> dict[str, str]:
    """The url-encoded form of a POST, after the CSRF checks (the session's token, or ``expected``)."""
    body = (await request.body()).decode("utf-8", "replace")
    fields: dict[str, str] = dict(parse_qsl(body, keep_blank_values=True))
    sent = fields.pop("_csrf", None) or request.headers.get("x-csrf-token")
    token = session.csrf if session else expected
    csrf.check(request, token or "", sent)
    return fields


def done(request: Request, target: str) -> Response:
    """After a successful POST: see the result (a full navigation also for htmx requests, so history works)."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


