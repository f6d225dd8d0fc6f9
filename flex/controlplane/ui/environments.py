"""The environments pages: the live list with filters and the create form, one environment, its actions.

Everything goes through the same Store calls the API routes make, as the signed-in user, so visibility,
validation, policy and the audit log are decided in one place; the UI only renders (and maps the API's
validation messages back to the form field they are about).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from sqlmodel import col, select

from flex.api import Environment, EnvironmentCreate
from flex.controlplane.auth import Principal
from flex.controlplane.models import RunnerRow
from flex.controlplane.routes.deps import watch_response
from flex.controlplane.routes.environments import parse_selector
from flex.controlplane.ui.backups import backup_list
from flex.controlplane.ui.base import UiRoute, cp_of, done, read_form, signed_in
from flex.controlplane.ui.render import page, templates
from flex.controlplane.ui.status import explain, timeline
from flex.errors import FlexError, InvalidArgument

__all__ = ["Filters", "Runners", "create_errors", "router"]

router = APIRouter(route_class=UiRoute, include_in_schema=False)
PHASES = ("pending", "building", "starting", "running", "stopping", "stopped", "failed", "deleting")
_MAX_LIST = 5000


@dataclass
class Filters:
    q: str = ""
    phase: str = ""
    labels: str = ""
    owner: str = ""

    @classmethod
    def of(cls, request: Request) -> Filters:
        p = request.query_params
        return cls(p.get("q", "")[:63], p.get("phase", "")[:32], p.get("labels", "")[:1024], p.get("owner", "")[:63])

    def matches(self, env: Environment) -> bool:
        if self.q and self.q.lower() not in env.metadata.name.lower():
            return False
        if self.phase and env.status.phase != self.phase:
            return False
        if self.owner and env.metadata.owner != self.owner:
            return False
        return all(env.metadata.labels.get(k) == v for k, v in parse_selector(self.labels).items())

    def query(self) -> str:
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in vars(self).items() if v})


@dataclass
class Runners:
    """Runner names and states by id, for the pages that show where an environment runs."""

    by_id: dict[str, tuple[str, str]] = field(default_factory=dict)

    def name(self, runner_id: str | None) -> str:
        return self.by_id.get(runner_id or "", (runner_id or "", ""))[0]

    def state(self, runner_id: str | None) -> str:
        return self.by_id.get(runner_id or "", ("", ""))[1]


def _runners(request: Request, ids: set[str]) -> Runners:
    if not ids:
        return Runners()
    with cp_of(request).db.read() as s:
        rows = s.execute(select(RunnerRow.id, RunnerRow.name, RunnerRow.state, RunnerRow.cordoned)
                         .where(col(RunnerRow.id).in_(ids))).all()
    return Runners({r[0]: (r[1], "cordoned" if r[3] and r[2] == "ready" else r[2]) for r in rows})


def _list(request: Request, who: Principal, filters: Filters) -> tuple[list[Environment], int, Runners]:
    cp = cp_of(request)
    labels = parse_selector(filters.labels)
    items: list[Environment] = []
    cont: str | None = None
    rv = 0
    while True:
        got = cp.store.list_environments(who, limit=1000, cont=cont, owner=filters.owner or None, labels=labels,
                                         phase=filters.phase or None)
        rv = rv or int(got["metadata"]["resourceVersion"])
        items += [e for e in map(Environment.model_validate, got["items"]) if filters.matches(e)]
        cont = got["metadata"].get("continue")
        if not cont or len(items) >= _MAX_LIST:
            break
    return items, rv, _runners(request, {e.status.runner_id for e in items if e.status.runner_id})


@router.get("/")
async def environments_page(request: Request) -> Response:
    session = await signed_in(request)
    filters = Filters.of(request)
    try:
        envs, rv, runners = await asyncio.to_thread(_list, request, session.who, filters)
        problem = None
    except InvalidArgument as err:  # a bad label selector: say so above the (empty) list
        envs, rv, runners, problem = [], 0, Runners(), err
    return page(request, "environments.html", envs=envs, rv=rv, runners=runners, filters=filters, phases=PHASES,
                problem=problem, form={}, errors={}, explain=explain)


@router.get("/ui/rows/{env_id}")
async def environment_row(request: Request, env_id: str) -> Response:
    """One row of the list as it is now (empty when gone or filtered out): what the live list swaps in."""
    session = await signed_in(request)
    cp = cp_of(request)
    try:
        env = (await cp.store.get_async(session.who, env_id)).env
    except FlexError:
        return Response("", media_type="text/html")
    if not Filters.of(request).matches(env):
        return Response("", media_type="text/html")
    runners = await asyncio.to_thread(_runners, request, {env.status.runner_id} if env.status.runner_id else set())
    html = templates.get_template("_env_row.html").render(env=env, runners=runners, who=session.who,
                                                          explain=explain)
    return Response(html, media_type="text/html")


@router.get("/ui/watch")
async def watch(request: Request, since: int | None = None) -> Response:
    """The API's watch stream for this browser (EventSource cannot send an Authorization header)."""
    session = await signed_in(request)
    who = session.who
    return await watch_response(cp_of(request), request, since=since, owner=None if who.admin else who.name,
                                runner_id=None, timeout=None)


_FIELDS = {"name": "name", "labels": "labels", "spec.source.git": "git", "spec.source.ref": "ref",
           "spec.source": "git", "spec.devcontainer.path": "devcontainer", "spec.resources.cpus": "cpus",
           "spec.resources.memory": "memory", "spec.resources.disk": "disk", "spec.docker": "docker",
           "spec": "git"}


def _field_of(where: str) -> str:
    while where and where not in _FIELDS:
        where = where.rpartition(".")[0]
    return _FIELDS.get(where, "form")


def create_errors(message: str) -> dict[str, str]:
    """An API error message ('spec.resources.cpus: Input should be ...') keyed by the form field it names."""
    where, sep, _ = message.partition(": ")
    return {_field_of(where.strip() if sep else ""): message}


def _body(form: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"git": form.get("git", "").strip() or None}}
    if form.get("ref", "").strip():
        spec["source"]["ref"] = form["ref"].strip()
    if form.get("devcontainer", "").strip():
        spec["devcontainer"] = {"path": form["devcontainer"].strip()}
    resources: dict[str, Any] = {}
    for key in ("cpus", "memory", "disk"):
        if form.get(key, "").strip():
            resources[key] = form[key].strip()
    if resources:
        spec["resources"] = resources
    spec["docker"] = form.get("docker") == "on"
    labels: dict[str, str] = {}
    for part in form.get("labels", "").split(","):
        if part.strip():
            key, eq, value = part.partition("=")
            if not eq:
                raise InvalidArgument(f"labels: {part.strip()!r} is not key=value", hint="e.g. team=web,tier=dev")
            labels[key.strip()] = value.strip()
    return {"name": form.get("name", "").strip(), "labels": labels, "spec": spec}


@router.post("/environments")
async def create(request: Request) -> Response:
    session = await signed_in(request)
    form = await read_form(request, session)
    cp = cp_of(request)
    try:
        try:
            body = EnvironmentCreate.model_validate(_body(form))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidArgument(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from err
        wire = await asyncio.to_thread(cp.store.create, session.who, body)
    except FlexError as err:
        filters = Filters.of(request)
        envs, rv, runners = await asyncio.to_thread(_list, request, session.who, filters)
        return page(request, "environments.html", err.http_status, envs=envs,
                    rv=rv, runners=runners, filters=filters, phases=PHASES, problem=None, form=form,
                    errors=create_errors(str(err)), hint=err.hint, explain=explain, open_create=True)
    return done(request, f"/environments/{wire.env.metadata.id}")


def _detail(request: Request, who: Principal, env_id: str) -> tuple[Environment, Runners, int]:
    """The environment, its runner, and a version to watch from: read before it, so no change is missed (its
    own resourceVersion could be older than the event log reaches, which would answer 410)."""
    rv, _ = cp_of(request).store.current_rv()
    env = cp_of(request).store.get(who, env_id).env
    return env, _runners(request, {env.status.runner_id} if env.status.runner_id else set()), rv


def _server_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


@router.get("/environments/{env_id}")
async def environment_page(request: Request, env_id: str) -> Response:
    session = await signed_in(request)
    env, runners, rv = await asyncio.to_thread(_detail, request, session.who, env_id)
    backups = await asyncio.to_thread(backup_list, cp_of(request).store, session.who, env)
    return page(request, "environment.html", env=env, runners=runners, explain=explain, timeline=timeline,
                server=_server_url(request), rv=rv, backups=backups,
                offline=runners.state(env.status.runner_id) == "offline")


@router.get("/ui/environments/{env_id}/status")
async def environment_status(request: Request, env_id: str) -> Response:
    session = await signed_in(request)
    try:
        env, runners, _ = await asyncio.to_thread(_detail, request, session.who, env_id)
    except FlexError:
        return Response('<p class="notice" id="env-live">This environment is gone.</p>', media_type="text/html")
    html = templates.get_template("_env_live.html").render(env=env, runners=runners, who=session.who, csrf=session.csrf,
                                                           explain=explain, timeline=timeline,
                                                           server=_server_url(request))
    return Response(html, media_type="text/html")


@router.post("/environments/{env_id}/{action}")
async def act(request: Request, env_id: str, action: str) -> Response:
    session = await signed_in(request)
    await read_form(request, session)
    store = cp_of(request).store
    if action in ("start", "stop"):
        await asyncio.to_thread(store.set_desired_phase, session.who, env_id,
                                "running" if action == "start" else "stopped")
        return done(request, f"/environments/{env_id}")
    if action == "rebuild":
        await asyncio.to_thread(store.rebuild, session.who, env_id)
        return done(request, f"/environments/{env_id}")
    if action == "delete":
        await asyncio.to_thread(store.delete, session.who, env_id)
        return done(request, "/")
    raise InvalidArgument(f"{action!r} is not something an environment does", hint="start, stop, rebuild or delete")
