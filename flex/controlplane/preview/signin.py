"""The preview sign-in step (issue 15): ``GET /preview/signin?next=/p/OWNER/ENV/PORT/...``.

A browser signed in to the web UI gets a preview cookie for that one environment and port, scoped to its
path, and goes on to ``next`` without being asked again; one that is not goes through /signin first. The UI's
session cookie is SameSite=Strict, so a browser that arrived from a link on another site does not send it on
this first request: one same-site reload (``retry=1``) lets it, before sending the user to sign in.
"""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from flex.controlplane.preview.credentials import COOKIE, mint_preview
from flex.controlplane.preview.target import find_target, parse_preview_path, preview_path
from flex.controlplane.routes.deps import ControlPlane
from flex.controlplane.ui.sessions import COOKIE as SESSION_COOKIE
from flex.controlplane.ui.sessions import current

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _page(status: int, title: str, hint: str, refresh: str | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="0;url={html.escape(refresh)}">' if refresh else ""
    return HTMLResponse(f"<!doctype html><meta charset=utf-8>{meta}<title>flex preview</title>"
                        f"<h1>{html.escape(title)}</h1><p>{html.escape(hint)}</p>", status_code=status,
                        headers={"Cache-Control": "no-store"})


@router.get("/preview/signin")
async def preview_signin(request: Request, next: str = "", retry: int = 0) -> Response:
    parsed = parse_preview_path(next.partition("?")[0])
    if parsed is None or "\\" in next:
        return _page(400, "Not a preview address", "preview addresses look like /p/OWNER/ENV/PORT/")
    owner, name, port, _ = parsed
    session = await current(request)
    if session is None:
        here = "/preview/signin?next=" + quote(next, safe="")
        if not retry:
            return _page(200, "Signing in to the preview", "one moment", refresh=here + "&retry=1")
        return RedirectResponse("/signin?next=" + quote(here, safe=""), status_code=303)
    cp: ControlPlane = request.app.state.cp
    target = await asyncio.to_thread(find_target, cp.db, owner, name, port)
    if target is None or session.who.name != owner:
        return _page(404, f"environment {owner}/{name} not found", "you can open previews of your own environments")
    try:
        cookie, expires = await asyncio.to_thread(mint_preview, cp.db, request.cookies.get(SESSION_COOKIE, ""),
                                                  target.env_id, port, cp.settings.preview_cookie_ttl)
    except LookupError:
        return RedirectResponse("/signin?next=" + quote(request.url.path + "?next=" + quote(next, safe=""),
                                                        safe=""), status_code=303)
    response = RedirectResponse(next, status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=max(1, int((expires - datetime.now(UTC)).total_seconds())),
                        path=preview_path(owner, name, port), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response
