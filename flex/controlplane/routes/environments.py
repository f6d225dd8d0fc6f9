"""/api/v1/environments: create, read, list (and watch), merge-patch, start/stop, delete, runner status."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from flex.api import Environment, EnvironmentCreate, EnvironmentList, EnvironmentMove, EnvironmentStatus
from flex.controlplane.errors import PROBLEM_RESPONSES, error_response
from flex.controlplane.routes.deps import Cp, RunnerCaller, User, bearer, user, watch_response
from flex.controlplane.store import Wire
from flex.errors import FlexError, InvalidArgument

__all__ = ["GetShortcut", "answer", "parse_selector", "router"]

router = APIRouter(prefix="/api/v1/environments", tags=["environments"], responses=PROBLEM_RESPONSES)

IfMatch = Annotated[str | None, Header(alias="If-Match", description="the resourceVersion you last read; 409 if stale")]
OwnerQ = Annotated[str | None, Query(description="an admin may address another user's environment", max_length=63)]
_WATCH_DOC = {200: {"description": "the list, or with watch=1 a text/event-stream of ADDED/MODIFIED/DELETED events",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


def parse_selector(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise InvalidArgument(f"labelSelector: {part!r} is not key=value",
                                  hint="e.g. labelSelector=team=a,tier=dev")
        out[key.strip()] = value.strip()
    return out


def answer(wire: Wire, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The stored JSON as it is, with its version as ETag (the model is declared on the route for the schema;
    returning a Response skips validating and re-encoding an object the store wrote through the models)."""
    return Response(wire.json, status_code=status_code, media_type="application/json",
                    headers={"ETag": f'"{wire.rv}"', **(headers or {})})


@router.post("", status_code=201, response_model=Environment)
def create_environment(cp: Cp, who: User, body: EnvironmentCreate) -> Response:
    return answer(cp.store.create(who, body), 201, {"Location": f"/api/v1/environments/{body.name}"})


@router.get("", response_model=EnvironmentList, responses=_WATCH_DOC)  # type: ignore[arg-type]
async def list_environments(
    cp: Cp, who: User, request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    continue_: Annotated[str | None, Query(alias="continue", max_length=1024)] = None,
    owner: OwnerQ = None,
    label_selector: Annotated[str | None, Query(alias="labelSelector", max_length=4096)] = None,
    phase: Annotated[str | None, Query(max_length=32)] = None,
    watch: Annotated[bool, Query(description="stream changes as server-sent events")] = False,
    resource_version: Annotated[int | None, Query(alias="resourceVersion", ge=0,
                                                  description="watch from after this version")] = None,
    timeout_seconds: Annotated[float | None, Query(alias="timeoutSeconds", gt=0, le=86400,
                                                   description="end a watch after this long")] = None,
) -> Any:
    if watch:
        scope = None if who.admin and not owner else (owner if who.admin else who.name)
        return await watch_response(cp, request, since=resource_version, owner=scope, runner_id=None,
                                    timeout=timeout_seconds)
    labels = parse_selector(label_selector)
    page = await asyncio.to_thread(cp.store.list_environments, who, limit=limit, cont=continue_, owner=owner,
                                   labels=labels, phase=phase)
    return Response(json.dumps(page, separators=(",", ":")), media_type="application/json")


# GetShortcut below serves this route without FastAPI's routing and dependency solving: keep the two in step.
@router.get("/{name}", response_model=Environment)
async def get_environment(cp: Cp, who: User, name: str, owner: OwnerQ = None) -> Response:
    return answer(await cp.store.get_async(who, name, owner))


@router.patch("/{name}", response_model=Environment, openapi_extra={"requestBody": {"content": {
    "application/merge-patch+json": {"schema": {"type": "object"}},
    "application/json": {"schema": {"type": "object"}}}}})
def patch_environment(cp: Cp, who: User, name: str, if_match: IfMatch = None,
                      owner: OwnerQ = None,
                      patch: Annotated[dict[str, Any], Body(description="RFC 7396 JSON merge patch")] = ...,  # type: ignore[assignment]
                      ) -> Response:
    return answer(cp.store.patch(who, name, patch, owner=owner, if_match=if_match))


@router.post("/{name}:start", response_model=Environment)
def start_environment(cp: Cp, who: User, name: str, if_match: IfMatch = None, owner: OwnerQ = None) -> Response:
    return answer(cp.store.set_desired_phase(who, name, "running", owner=owner, if_match=if_match))


@router.post("/{name}:stop", response_model=Environment)
def stop_environment(cp: Cp, who: User, name: str, if_match: IfMatch = None, owner: OwnerQ = None) -> Response:
    return answer(cp.store.set_desired_phase(who, name, "stopped", owner=owner, if_match=if_match))


@router.post("/{name}:rebuild", response_model=Environment)
def rebuild_environment(cp: Cp, who: User, name: str, if_match: IfMatch = None, owner: OwnerQ = None) -> Response:
    """Recreate the environment's container from the same spec, on the same workspace volume (as `devcontainer
    up --remove-existing-container`): bumps spec.rebuild and the generation; its runner replaces the container
    and runs the creation hooks again."""
    return answer(cp.store.rebuild(who, name, owner=owner, if_match=if_match))


@router.post("/{name}:move", status_code=202, response_model=Environment)
def move_environment(cp: Cp, who: User, name: str, body: EnvironmentMove, owner: OwnerQ = None) -> Response:
    """Move the environment to another runner ({"runner": NAME} or {"runnerSelector": {...}}): its runner stops
    it and makes a last backup, the new runner restores and starts it, then the old copy is removed (spec.move
    and the Moving condition say how far it is; a failure leaves it on its runner). Both runners must use the
    server's shared backup repository (412 otherwise)."""
    from flex.controlplane.moves import Moves

    wire = Moves(cp.store, shared=bool(cp.settings.backup_repository)).request(who, name, body, owner=owner)
    return answer(wire, 202)


@router.delete("/{name}", response_model=Environment,
               responses={202: {"model": Environment,
                                "description": "marked deleting; gone once its runner tears down"}})
def delete_environment(cp: Cp, who: User, name: str, if_match: IfMatch = None, owner: OwnerQ = None,
                       force: Annotated[bool, Query(description="admins: remove it now, without its runner "
                                                                "(for a runner gone for good)")] = False,
                       ) -> Response:
    wire, gone = cp.store.delete(who, name, owner=owner, if_match=if_match, force=force)
    return answer(wire, 200 if gone else 202)


@router.put("/{name}/status", response_model=Environment)
def put_status(cp: Cp, who: RunnerCaller, name: str, body: EnvironmentStatus, request: Request,
               if_match: IfMatch = None) -> Response:
    """Runner only: report the observed status of an environment bound to this runner (address it by id)."""
    base = cp.settings.public_url or str(request.base_url)
    return answer(cp.store.put_status(who, name, body, if_match=if_match, preview_base=base))


class GetShortcut:
    """``GET /api/v1/environments/{name}`` (no query string) answered before FastAPI routes it (issue 12.7).

    Resolving the route and solving its dependencies cost several times what the read itself does; this
    runs exactly what get_environment runs (the same bearer, user check, store read and answer), so
    authentication, scopes and visibility stay decided in one place each. Anything else goes to FastAPI.
    """

    PREFIX = "/api/v1/environments/"

    def __init__(self, app: ASGIApp, route: APIRoute | None = None) -> None:
        self.app, self.route = app, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string")
                or not path.startswith(self.PREFIX) or "/" in path[len(self.PREFIX):] or path == self.PREFIX):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            who = await user(request, await bearer(request))
            response = answer(await request.app.state.cp.store.get_async(who, path[len(self.PREFIX):]))
        except FlexError as err:
            response = error_response(err, path)
        if self.route is not None:
            scope["route"] = self.route  # what FastAPI would have set: metrics count it under the template
        await response(scope, receive, send)
