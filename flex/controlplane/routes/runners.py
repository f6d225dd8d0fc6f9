"""/api/v1/runners: join tokens, joining, heartbeats, each runner's view of its environments, and what an admin
(or a personal runner's owner) does to a runner: cordon, uncordon, drain, delete, rotate and revoke its credential."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from flex.api import (
    BackupList,
    BackupRepository,
    Environment,
    EnvironmentList,
    JoinRequest,
    JoinResponse,
    JoinToken,
    Runner,
    RunnerGrant,
    RunnerHeartbeat,
    RunnerList,
    RunnerSecrets,
)
from flex.api.backup_spec import BACKUP_ID_PATTERN
from flex.controlplane.auth import Principal, create_join_token
from flex.controlplane.backup_repository import shared_repository
from flex.controlplane.backups import Backups
from flex.controlplane.errors import PROBLEM_RESPONSES
from flex.controlplane.moves import Moves
from flex.controlplane.routes.deps import Caller, Cp, RunnerCaller, User, client_address, watch_response
from flex.controlplane.routes.environments import _WATCH_DOC, answer
from flex.controlplane.runners import find_runner
from flex.errors import NotFound, PermissionDenied, Unauthenticated

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/runners", tags=["runners"], responses=PROBLEM_RESPONSES)


def _self(who: Principal, runner_id: str) -> None:
    if who.id != runner_id:
        raise PermissionDenied("a runner may act only as itself")


@router.post("/join-tokens", status_code=201, response_model=JoinToken)
def create_join_token_route(cp: Cp, who: User, body: RunnerGrant | None = None) -> JoinToken:
    """A single-use join token carrying what the runner is granted. Admins: any grant; a user: ``{"owner": me}``."""
    token, expires, grant = create_join_token(cp.db, who, cp.settings.join_token_ttl, body)
    return JoinToken(token=token, expires_at=expires, grant=grant)


# Registered on the app without the /runners prefix: POST /api/v1/runners:join
join_router = APIRouter(tags=["runners"], responses=PROBLEM_RESPONSES)


@join_router.post("/api/v1/runners:join", status_code=201, response_model=JoinResponse)
def join(cp: Cp, body: JoinRequest, request: Request) -> JoinResponse:
    """Exchange a single-use join token for a runner id and credential (no Authorization header needed)."""
    addr = client_address(request)
    cp.limiter.check(addr)
    try:
        return cp.runners.join(body)
    except Unauthenticated:
        cp.limiter.failed(addr)
        raise


@router.get("", response_model=RunnerList)
def list_runners(cp: Cp, who: User) -> RunnerList:
    """An admin sees every runner; a user their personal ones."""
    return RunnerList(items=cp.runners.list_runners(who))


@router.get("/{runner_id}", response_model=Runner)
def get_runner(cp: Cp, who: Caller, runner_id: str) -> Runner:
    if who.kind == "runner":
        _self(who, runner_id)
    elif not who.admin:
        with cp.db.read() as s:
            runner_id = find_runner(s, who, runner_id).id  # a user's own runner; any other is 404
    return cp.runners.get(runner_id)


@router.post("/{runner_id}:cordon", response_model=Runner)
def cordon(cp: Cp, who: User, runner_id: str) -> Runner:
    """No new environments are bound to it; those bound stay."""
    return cp.runners.set_cordoned(who, runner_id, True)


@router.post("/{runner_id}:uncordon", response_model=Runner)
def uncordon(cp: Cp, who: User, runner_id: str) -> Runner:
    return cp.runners.set_cordoned(who, runner_id, False)


@router.post("/{runner_id}:drain", response_model=Runner)
def drain(cp: Cp, who: User, runner_id: str) -> Runner:
    """Cordon, and move each of its environments to another runner (as `:move` does; the server's shared
    backup repository carries them). 412 without one while it has environments (nothing changes), or naming
    those that no other runner fits (the others move)."""
    return cp.runners.drain(who, runner_id, Moves(cp.store, shared=bool(cp.settings.backup_repository)))


@router.post("/{runner_id}:rotate", response_model=JoinResponse)
def rotate(cp: Cp, who: Caller, runner_id: str) -> JoinResponse:
    """A new credential (shown once) for an admin, the owner, or the runner itself; the old one stops working."""
    if who.kind == "runner":
        _self(who, runner_id)
    elif "write" not in who.scopes:
        raise PermissionDenied("this token lacks the 'write' scope", hint="create a token with that scope")
    fresh = cp.runners.rotate(who, runner_id)
    cp.credentials.clear()
    return fresh


@router.post("/{runner_id}:revoke", response_model=Runner)
def revoke(cp: Cp, who: User, runner_id: str) -> Runner:
    """Its credential stops working at once here and within the credential cache TTL on other replicas."""
    runner = cp.runners.revoke(who, runner_id)
    cp.credentials.clear()
    return runner


@router.delete("/{runner_id}", status_code=204)
def delete_runner(cp: Cp, who: User, runner_id: str) -> Response:
    """Remove a runner and its credential (412 while environments are bound to it)."""
    cp.runners.delete(who, runner_id)
    cp.credentials.clear()
    return Response(status_code=204)


@router.post("/{runner_id}/heartbeat", response_model=Runner)
def heartbeat(cp: Cp, who: RunnerCaller, runner_id: str, body: RunnerHeartbeat | None = None) -> Runner:
    return cp.runners.heartbeat(who, runner_id, body or RunnerHeartbeat())


@router.get("/{runner_id}/environments", response_model=EnvironmentList, responses=_WATCH_DOC)  # type: ignore[arg-type]
async def runner_environments(
    cp: Cp, who: RunnerCaller, runner_id: str, request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    continue_: Annotated[str | None, Query(alias="continue", max_length=1024)] = None,
    watch: bool = False,
    resource_version: Annotated[int | None, Query(alias="resourceVersion", ge=0)] = None,
    timeout_seconds: Annotated[float | None, Query(alias="timeoutSeconds", gt=0, le=86400)] = None,
) -> Any:
    """The environments bound to this runner; with watch=1, their changes as server-sent events."""
    _self(who, runner_id)
    if watch:
        return await watch_response(cp, request, since=resource_version, owner=None, runner_id=runner_id,
                                    timeout=timeout_seconds)
    page = await asyncio.to_thread(cp.store.list_environments, who, limit=limit, cont=continue_)
    return Response(json.dumps(page, separators=(",", ":")), media_type="application/json")


@router.get("/{runner_id}/environments/{env_id}", response_model=Environment)
async def runner_environment(cp: Cp, who: RunnerCaller, runner_id: str, env_id: str) -> Response:
    _self(who, runner_id)
    return answer(await cp.store.get_async(who, env_id))


@router.get("/{runner_id}/environments/{env_id}/secrets", response_model=RunnerSecrets)
def runner_environment_secrets(cp: Cp, who: RunnerCaller, runner_id: str, env_id: str) -> Response:
    """The secrets this environment gets as variables: only for the runner it is bound to (others: 404)."""
    _self(who, runner_id)
    body = cp.secrets.for_runner(who, env_id).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/{runner_id}/backup-repository", response_model=BackupRepository)
def runner_backup_repository(cp: Cp, who: RunnerCaller, runner_id: str) -> Response:
    """Runner only: the installation's shared backup repository and its password (404 when there is none)."""
    _self(who, runner_id)
    repo = shared_repository(cp.settings)
    if repo is None:
        raise NotFound("this server has no shared backup repository",
                       hint="runners keep their own (flex server --backup-repository makes one)")
    return Response(repo.model_dump_json(by_alias=True), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get("/{runner_id}/expired-backups", response_model=BackupList)
def runner_expired_backups(cp: Cp, who: RunnerCaller, runner_id: str) -> BackupList:
    """Runner only: backups of deleted environments whose time is up, in a repository this runner looks after;
    it forgets their snapshots, then says so (DELETE) and the rows go (issue 17)."""
    _self(who, runner_id)
    return BackupList(items=Backups(cp.store).due(who, runner_id))


@router.delete("/{runner_id}/expired-backups/{backup_id}", status_code=204)
def runner_forgot_backup(cp: Cp, who: RunnerCaller, runner_id: str,
                         backup_id: Annotated[str, Path(pattern=BACKUP_ID_PATTERN)]) -> Response:
    _self(who, runner_id)
    Backups(cp.store).forgotten(who, runner_id, backup_id)
    return Response(status_code=204)


@router.delete("/{runner_id}/environments/{env_id}", status_code=204)
def confirm_teardown(cp: Cp, who: RunnerCaller, runner_id: str, env_id: str) -> Response:
    """The runner has torn a deleting environment down: remove it for good (watchers see DELETED); or it has
    removed its old copy of an environment moved to another runner: the move is over (issue 17.5)."""
    _self(who, runner_id)
    cp.store.confirm_teardown(who, env_id)
    return Response(status_code=204)
