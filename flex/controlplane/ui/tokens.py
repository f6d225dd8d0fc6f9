"""The tokens page: a user's own API tokens; a new one is shown once, on the page that created it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from flex.api import TokenCreate
from flex.controlplane.auth import create_token, delete_token, list_tokens
from flex.controlplane.ui.base import UiRoute, cp_of, done, read_form, signed_in
from flex.controlplane.ui.render import page
from flex.controlplane.ui.sessions import count_sessions
from flex.errors import FlexError, InvalidArgument

__all__ = ["router"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)


@router.get("/tokens")
async def tokens_page(request: Request) -> Response:
    session = await signed_in(request)
    tokens = await asyncio.to_thread(list_tokens, cp_of(request).db, session.who)
    sessions = await asyncio.to_thread(count_sessions, cp_of(request).db, session.who)
    return page(request, "tokens.html", tokens=tokens, created=None, error=None, form={}, sessions=sessions)


@router.post("/tokens")
async def new_token(request: Request) -> Response:
    session = await signed_in(request)
    form = await read_form(request, session)
    cp = cp_of(request)
    created, error = None, None
    scopes = ["read", "write"] if form.get("scope") != "read" else ["read"]
    try:
        days = form.get("days", "").strip()
        expires = None
        if days:
            from datetime import UTC, datetime, timedelta

            if not days.isdigit() or not 0 < int(days) <= 3650:
                raise InvalidArgument("expiresAt: give a whole number of days between 1 and 3650, or none")
            expires = datetime.now(UTC) + timedelta(days=int(days))
        try:
            body = TokenCreate.model_validate({"name": form.get("name", "").strip() or "token", "scopes": scopes,
                                               "expiresAt": expires})
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidArgument(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
        created = await asyncio.to_thread(create_token, cp.db, session.who, body)
    except FlexError as err:
        error = str(err)
    tokens = await asyncio.to_thread(list_tokens, cp.db, session.who)
    sessions = await asyncio.to_thread(count_sessions, cp.db, session.who)
    response = page(request, "tokens.html", 201 if created else 422, tokens=tokens, created=created, error=error,
                    form=form, sessions=sessions)
    return response


@router.post("/tokens/{token_id}/revoke")
async def revoke(request: Request, token_id: str) -> Response:
    session = await signed_in(request)
    await read_form(request, session)
    cp = cp_of(request)
    await asyncio.to_thread(delete_token, cp.db, session.who, token_id)
    cp.credentials.clear()
    return done(request, "/tokens")
