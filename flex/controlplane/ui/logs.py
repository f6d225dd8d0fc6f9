"""An environment's logs followed live in its page: the API's logs endpoint, authenticated by the browser's
session (a fetch could send a header, but the page never holds a token). Reading only: a cross-site page gets
no cookie (SameSite=Strict) and cannot read the answer (no CORS), so no CSRF token is needed."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from flex.controlplane.routes.access import environment_logs
from flex.controlplane.ui.base import UiRoute, cp_of, signed_in
from flex.errors import FlexError

__all__ = ["router"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)


@router.get("/ui/environments/{env_id}/logs")
async def follow_logs(request: Request, env_id: str,
                      source: Annotated[Literal["container", "hooks", "build"], Query()] = "container",
                      ) -> Response:
    """The log's bytes, then what is appended, until the page closes it; an error is one line of text (the
    page shows it above the log, and tries again while it stays open)."""
    session = await signed_in(request)
    cp = cp_of(request)
    try:
        env = await asyncio.to_thread(lambda: cp.store.get(session.who, env_id).env)
        return await environment_logs(cp, session.who, request, env.metadata.name, source=source, follow=True)
    except FlexError as err:
        text = err.message + (f" ({err.hint})" if err.hint else "")
        return PlainTextResponse(text, status_code=err.http_status, headers={"Cache-Control": "no-store"})
