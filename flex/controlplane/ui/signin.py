"""Sign in with a token (the form posts it in the body, never in a URL), sign out."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from flex.controlplane.ui import csrf
from flex.controlplane.ui.base import UiRoute, cp_of, read_form
from flex.controlplane.ui.render import page
from flex.controlplane.ui.sessions import COOKIE, close_all_sessions, close_session, current, open_session
from flex.errors import PermissionDenied, Unauthenticated

__all__ = ["router"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def _next(target: str | None) -> str:
    """Only a path on this server: an open redirect would make our sign-in page a phishing tool."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _signin_page(request: Request, status: int = 200, error: str | None = None, hint: str | None = None,
                 target: str = "/") -> Response:
    pre = secrets.token_urlsafe(24)
    response = page(request, "signin.html", status, pre=pre, error=error, hint=hint, next=target)
    response.set_cookie(csrf.SIGNIN_COOKIE, pre, max_age=3600, httponly=True, samesite="strict", path="/signin",
                        secure=request.url.scheme == "https")
    return response


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    if await current(request) is not None:
        return RedirectResponse(_next(next), status_code=303)
    return _signin_page(request, target=_next(next))


@router.post("/signin")
async def signin(request: Request) -> Response:
    fields = await read_form(request, None, request.cookies.get(csrf.SIGNIN_COOKIE))
    target = _next(fields.get("next"))
    token = fields.get("token", "").strip()
    cp = cp_of(request)
    addr = request.client.host if request.client else "unknown"
    cp.limiter.check(addr)
    try:
        cookie, session = await asyncio.to_thread(open_session, cp.db, token, cp.settings.ui_session_ttl)
    except (Unauthenticated, PermissionDenied) as err:
        cp.limiter.failed(addr)
        return _signin_page(request, 401, str(err), err.hint or "paste a user token (flexu_...)", target)
    previous = request.cookies.get(COOKIE)
    if previous:  # signing in again (maybe as someone else) ends the session this browser had
        await asyncio.to_thread(close_session, cp.db, previous)
    response = RedirectResponse(target, status_code=303)
    max_age = max(1, int((session.expires_at - datetime.now(UTC)).total_seconds()))
    response.set_cookie(COOKIE, cookie, max_age=max_age, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    response.delete_cookie(csrf.SIGNIN_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await current(request)
    if session is not None:
        await read_form(request, session)
        cookie = request.cookies.get(COOKIE, "")
        await asyncio.to_thread(close_session, cp_of(request).db, cookie)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/signout-everywhere")
async def signout_everywhere(request: Request) -> Response:
    """Every browser session of this user ends, this one too (a lost laptop, a shared computer)."""
    session = await current(request)
    if session is not None:
        await read_form(request, session)
        await asyncio.to_thread(close_all_sessions, cp_of(request).db, session.who)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
