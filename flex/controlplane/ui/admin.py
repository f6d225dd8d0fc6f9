"""The admin pages: runners (state, capacity against what is allocated, labels, their environments, join
tokens with the command to paste), users (create, with their first token shown once), the audit log."""

from __future__ import annotations

import asyncio
import shlex
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from flex.api import AuditEventList, Environment, RunnerGrant, UserCreate
from flex.controlplane.audit import list_events
from flex.controlplane.auth import Principal, create_join_token, create_user, list_users
from flex.controlplane.ui.base import UiRoute, cp_of, read_form, signed_in_admin
from flex.controlplane.ui.render import page
from flex.errors import FlexError, InvalidArgument

__all__ = ["join_commands", "router"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def _runners_context(request: Request, who: Principal) -> dict[str, Any]:
    cp = cp_of(request)
    runners = cp.runners.list_runners(who)
    got = cp.store.list_environments(who, limit=1000, cont=None)
    per_runner: dict[str, list[Environment]] = {}
    for item in got["items"]:
        env = Environment.model_validate(item)
        if env.status.runner_id:
            per_runner.setdefault(env.status.runner_id, []).append(env)
    return {"runners": runners, "per_runner": per_runner,
            "states": Counter(r.state for r in runners)}


def join_commands(server: str, token: str, grant: RunnerGrant) -> list[str]:
    """What to paste on the new machine, exactly (installer first on a fresh one)."""
    labels = "".join(f" --label {shlex.quote(f'{k}={v}')}" for k, v in sorted(grant.labels.items())
                     if v != "*")
    kind = " --kind desktop" if grant.owner else ""
    return ["installer/install.sh", f"flex runner join {shlex.quote(server)} --token {token}{kind}{labels}",
            "flex runner run"]


@router.get("/runners")
async def runners_page(request: Request) -> Response:
    session = await signed_in_admin(request)
    ctx = await asyncio.to_thread(_runners_context, request, session.who)
    return page(request, "runners.html", **ctx, join=None, form={}, error=None)


@router.post("/runners/join-tokens")
async def new_join_token(request: Request) -> Response:
    session = await signed_in_admin(request)
    form = await read_form(request, session)
    cp = cp_of(request)
    labels: dict[str, str] = {}
    error: str | None = None
    join = None
    try:
        for part in form.get("labels", "").split(","):
            if part.strip():
                key, eq, value = part.partition("=")
                if not eq:
                    raise InvalidArgument(f"labels: {part.strip()!r} is not key=value", hint="e.g. zone=eu,gpu=*")
                labels[key.strip()] = value.strip()
        try:
            grant = RunnerGrant.model_validate({"labels": labels, "owner": form.get("owner", "").strip() or None})
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidArgument(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
        token, expires, grant = await asyncio.to_thread(create_join_token, cp.db, session.who,
                                                        cp.settings.join_token_ttl, grant)
        server = f"{request.url.scheme}://{request.url.netloc}"
        join = {"expires": expires, "commands": join_commands(server, token, grant)}
    except InvalidArgument as err:
        error = str(err)
    ctx = await asyncio.to_thread(_runners_context, request, session.who)
    return page(request, "runners.html", 201 if join else 422, **ctx, join=join, form=form, error=error)


@router.get("/users")
async def users_page(request: Request) -> Response:
    await signed_in_admin(request)
    users = await asyncio.to_thread(list_users, cp_of(request).db)
    return page(request, "users.html", users=users, created=None, form={}, error=None)


@router.post("/users")
async def new_user(request: Request) -> Response:
    session = await signed_in_admin(request)
    form = await read_form(request, session)
    cp = cp_of(request)
    created, error = None, None
    try:
        try:
            body = UserCreate.model_validate({"name": form.get("name", "").strip(), "admin": form.get("admin") == "on"})
        except ValidationError as err:
            first = err.errors()[0]
            raise InvalidArgument(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
        created = await asyncio.to_thread(create_user, cp.db, session.who, body.name, body.admin, body.groups)
    except FlexError as err:
        error = str(err)
    users = await asyncio.to_thread(list_users, cp.db)
    return page(request, "users.html", 201 if created else 422, users=users, created=created, form=form,
                error=error)


@router.get("/audit")
async def audit_page(request: Request, actor: str = "", action: str = "", cont: str = "") -> Response:
    await signed_in_admin(request)

    def read() -> AuditEventList:
        with cp_of(request).db.read() as s:
            return list_events(s, actor=actor[:200] or None, action=action[:200] or None, limit=100,
                               cont=cont[:1024] or None)

    events = await asyncio.to_thread(read)
    return page(request, "audit.html", events=events, actor=actor, action=action)
