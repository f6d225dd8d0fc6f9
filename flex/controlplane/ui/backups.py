"""The environment page's backups: the list (refreshed with the page's live status), back up now, delete,
and restore as a new environment (its own small form, so a live refresh never wipes what is typed).

Everything goes through :class:`flex.controlplane.backups.Backups`, the same calls the API routes make, as the
signed-in user; an admin viewing another user's environment addresses it with its owner, as the API's ``owner``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from flex.api import Backup, BackupRestore, Environment
from flex.controlplane.auth import Principal
from flex.controlplane.backups import Backups
from flex.controlplane.models import RunnerRow
from flex.controlplane.store import Store
from flex.controlplane.ui.base import UiRoute, cp_of, done, read_form, signed_in
from flex.controlplane.ui.render import page, templates
from flex.errors import FlexError, InvalidArgument

__all__ = ["backup_list", "router", "runner_offline"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def _env(request: Request, who: Principal, env_id: str) -> Environment:
    return cp_of(request).store.get(who, env_id).env


def _owner(who: Principal, env: Environment) -> str | None:
    return env.metadata.owner if who.admin and env.metadata.owner != who.name else None


def backup_list(store: Store, who: Principal, env: Environment) -> list[Backup]:
    """``env``'s backups as its page lists them: newest first, as a person reads a history."""
    return list(reversed(Backups(store).list(who, env.metadata.name, _owner(who, env))))


def runner_offline(store: Store, env: Environment) -> bool:
    """Whether the runner ``env`` is bound to is offline: a backup asked for now waits for it."""
    if not env.status.runner_id:
        return False
    with store.db.read() as s:
        row = s.get(RunnerRow, env.status.runner_id)
    return row is not None and row.state == "offline"


def _backups(request: Request, who: Principal, env_id: str) -> tuple[Environment, list[Backup], bool]:
    env = _env(request, who, env_id)
    store = cp_of(request).store
    return env, backup_list(store, who, env), runner_offline(store, env)


@router.get("/ui/environments/{env_id}/backups")
async def backups_fragment(request: Request, env_id: str) -> Response:
    """The list as it is now: what the environment page swaps in when the environment changes."""
    session = await signed_in(request)
    try:
        env, items, offline = await asyncio.to_thread(_backups, request, session.who, env_id)
    except FlexError:
        return Response('<div id="backups"><p class="muted">This environment is gone.</p></div>',
                        media_type="text/html")
    html = templates.get_template("_backups.html").render(env=env, backups=items, who=session.who,
                                                          csrf=session.csrf, offline=offline)
    return Response(html, media_type="text/html")


@router.post("/environments/{env_id}/backups")
async def back_up_now(request: Request, env_id: str) -> Response:
    session = await signed_in(request)
    await read_form(request, session)

    def ask() -> None:
        env = _env(request, session.who, env_id)
        Backups(cp_of(request).store).request(session.who, env.metadata.name, owner=_owner(session.who, env))

    await asyncio.to_thread(ask)
    return done(request, f"/environments/{env_id}#h-backups")


@router.post("/environments/{env_id}/backups/{backup_id}/delete")
async def delete_backup(request: Request, env_id: str, backup_id: str) -> Response:
    session = await signed_in(request)
    await read_form(request, session)

    def forget() -> None:
        env = _env(request, session.who, env_id)
        Backups(cp_of(request).store).delete(session.who, env.metadata.name, backup_id, _owner(session.who, env))

    await asyncio.to_thread(forget)
    return done(request, f"/environments/{env_id}")  # no #fragment: htmx's redirect to the same page would not load


def _one(request: Request, who: Principal, env_id: str, backup_id: str) -> tuple[Environment, Backup]:
    env = _env(request, who, env_id)
    return env, Backups(cp_of(request).store).get(who, env.metadata.name, backup_id, _owner(who, env))


@router.get("/environments/{env_id}/backups/{backup_id}/restore")
async def restore_form(request: Request, env_id: str, backup_id: str) -> Response:
    session = await signed_in(request)
    env, backup = await asyncio.to_thread(_one, request, session.who, env_id, backup_id)
    return page(request, "restore.html", env=env, backup=backup, form={}, errors={})


def _as_error(err: ValidationError) -> InvalidArgument:
    first = err.errors()[0]
    return InvalidArgument(f"name: {str(first['msg']).removeprefix('Value error, ')}",
                           hint="lower-case letters, digits and '-', starting with a letter, at most 63")


@router.post("/environments/{env_id}/backups/{backup_id}/restore")
async def restore(request: Request, env_id: str, backup_id: str) -> Response:
    session = await signed_in(request)
    form = await read_form(request, session)
    env, backup = await asyncio.to_thread(_one, request, session.who, env_id, backup_id)
    try:
        try:
            body = BackupRestore.model_validate({"as": form.get("as", "").strip()})
        except ValidationError as err:
            raise _as_error(err) from err
        wire = await asyncio.to_thread(Backups(cp_of(request).store).restore, session.who, env.metadata.name,
                                       backup_id, body.as_, body.labels, _owner(session.who, env))
    except FlexError as err:  # the message goes next to the field, as the create form does
        return page(request, "restore.html", err.http_status, env=env, backup=backup, form=form,
                    errors={"as": str(err)}, hint=err.hint)
    return done(request, f"/environments/{wire.env.metadata.id}")
