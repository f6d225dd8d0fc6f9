"""Every API call as data (method, path, body, how to read the answer), shared by the sync and async clients,
and the mapping of problem+json answers back to flex.errors classes. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from flex.api import (
    AuditEventList,
    Backup,
    BackupList,
    BackupReport,
    BackupRepository,
    Environment,
    EnvironmentCreate,
    EnvironmentList,
    EnvironmentMove,
    EnvironmentSpec,
    EnvironmentStatus,
    JoinRequest,
    JoinResponse,
    JoinToken,
    Policy,
    Runner,
    RunnerCapacity,
    RunnerGrant,
    RunnerHeartbeat,
    RunnerList,
    RunnerSecrets,
    Secret,
    SecretList,
    SecretPut,
    TokenCreate,
    TokenCreated,
    TokenList,
    User,
    UserCreated,
    WatchEvent,
)
from flex.api.errors import Gone
from flex.errors import FlexError, InvalidArgument, Unavailable, error_for_kind

__all__ = ["Call", "Calls", "SSEParser", "error_from_response", "raise_for_status"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def error_from_response(response: httpx.Response) -> FlexError:
    """The flex.errors class the server reported (its ``kind``), with message and hint."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "kind" in body and "message" in body:
        kind, message, hint = str(body["kind"]), str(body["message"]), body.get("hint")
        details = body.get("details") if isinstance(body.get("details"), dict) else None
        if kind == Gone.kind:
            return Gone(message, hint=hint, details=details)
        return error_for_kind(kind, message, hint=hint, details=details)
    text = response.text[:200].strip() or response.reason_phrase
    if response.status_code >= 500:
        return Unavailable(f"the server answered {response.status_code}: {text}")
    return error_for_kind("Error", f"the server answered {response.status_code}: {text}")


def raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_from_response(response)


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _validate(cls: type[M], data: Any) -> M:
    """Check a request body before sending it; a bad one is InvalidArgument, as the server would say."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        from flex.api.validation import validation_message

        raise InvalidArgument(validation_message(err.errors()[0])) from err


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.model_validate(r.json())


def _none(_: httpx.Response) -> None:
    return None


def _p(name: str) -> str:
    return quote(name, safe="")


def _if_match(resource_version: int | None) -> dict[str, str]:
    return {} if resource_version is None else {"If-Match": f'"{resource_version}"'}


def _owner(owner: str | None) -> dict[str, Any]:
    return {} if owner is None else {"owner": owner}


class Calls:
    """Builders of each call; the clients run them."""

    # environments ------------------------------------------------------------------------------------
    @staticmethod
    def create_environment(name: str, spec: EnvironmentSpec | dict[str, Any] | None = None, *,
                           git: str | None = None, labels: dict[str, str] | None = None) -> Call[Environment]:
        if spec is None:
            spec = {"source": {"git": git}}
        body = _validate(EnvironmentCreate, {"name": name, "labels": labels or {},
                                                 "spec": spec if isinstance(spec, dict) else spec.to_wire()})
        # only what was given: the server fills the defaults (and the policy's default memory)
        return Call("POST", "/api/v1/environments", _model(Environment),
                    json=body.model_dump(mode="json", by_alias=True, exclude_unset=True))

    @staticmethod
    def get_environment(name: str, owner: str | None = None) -> Call[Environment]:
        return Call("GET", f"/api/v1/environments/{_p(name)}", _model(Environment), params=_owner(owner))

    @staticmethod
    def list_environments(*, limit: int = 100, cont: str | None = None, owner: str | None = None,
                          labels: dict[str, str] | None = None, phase: str | None = None) -> Call[EnvironmentList]:
        params: dict[str, Any] = {"limit": limit, **_owner(owner)}
        if cont:
            params["continue"] = cont
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if phase:
            params["phase"] = phase
        return Call("GET", "/api/v1/environments", _model(EnvironmentList), params=params)

    @staticmethod
    def patch_environment(name: str, patch: dict[str, Any], *, resource_version: int | None = None,
                          owner: str | None = None) -> Call[Environment]:
        return Call("PATCH", f"/api/v1/environments/{_p(name)}", _model(Environment), params=_owner(owner),
                    json=patch, headers={"Content-Type": "application/merge-patch+json", **_if_match(resource_version)})

    @staticmethod
    def set_phase(name: str, verb: str, *, resource_version: int | None = None,
                  owner: str | None = None) -> Call[Environment]:
        return Call("POST", f"/api/v1/environments/{_p(name)}:{verb}", _model(Environment), params=_owner(owner),
                    headers=_if_match(resource_version))

    @staticmethod
    def move_environment(name: str, runner: str | None = None, selector: dict[str, str] | None = None, *,
                         owner: str | None = None) -> Call[Environment]:
        body = _validate(EnvironmentMove, {"runner": runner, "runnerSelector": selector})
        return Call("POST", f"/api/v1/environments/{_p(name)}:move", _model(Environment), params=_owner(owner),
                    json=body.model_dump(mode="json", by_alias=True, exclude_none=True))

    @staticmethod
    def runner_backup_repository(runner_id: str) -> Call[BackupRepository]:
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}/backup-repository", _model(BackupRepository))

    @staticmethod
    def delete_environment(name: str, *, resource_version: int | None = None,
                           owner: str | None = None, force: bool = False) -> Call[Environment]:
        params = {**_owner(owner), **({"force": "true"} if force else {})}
        return Call("DELETE", f"/api/v1/environments/{_p(name)}", _model(Environment), params=params,
                    headers=_if_match(resource_version))

    @staticmethod
    def watch_params(resource_version: int | None, timeout: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {"watch": "1"}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if timeout is not None:
            params["timeoutSeconds"] = timeout
        return params

    # runners -----------------------------------------------------------------------------------------
    @staticmethod
    def create_join_token(grant: RunnerGrant | dict[str, Any] | None = None) -> Call[JoinToken]:
        if grant is None:
            return Call("POST", "/api/v1/runners/join-tokens", _model(JoinToken))
        body = _validate(RunnerGrant, grant if isinstance(grant, dict) else grant.to_wire())
        return Call("POST", "/api/v1/runners/join-tokens", _model(JoinToken),
                    json=body.model_dump(mode="json", by_alias=True, exclude_none=True))

    @staticmethod
    def join(token: str, name: str, kind: str, capacity: RunnerCapacity | dict[str, Any],
             labels: dict[str, str] | None = None, *, rootless: bool = False,
             id_ranges: int = 0) -> Call[JoinResponse]:
        body = _validate(JoinRequest, {"token": token, "name": name, "kind": kind, "labels": labels or {},
                                           "capacity": capacity if isinstance(capacity, dict) else capacity.to_wire(),
                                           "rootless": rootless, "idRanges": id_ranges})
        return Call("POST", "/api/v1/runners:join", _model(JoinResponse), json=body.to_wire())

    @staticmethod
    def runner_verb(runner: str, verb: str) -> Call[Runner]:
        """``POST /api/v1/runners/{runner}:{verb}`` for cordon, uncordon, drain and revoke (id or name)."""
        return Call("POST", f"/api/v1/runners/{_p(runner)}:{verb}", _model(Runner))

    @staticmethod
    def rotate_runner(runner: str) -> Call[JoinResponse]:
        return Call("POST", f"/api/v1/runners/{_p(runner)}:rotate", _model(JoinResponse))

    @staticmethod
    def delete_runner(runner: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/runners/{_p(runner)}", _none)

    @staticmethod
    def heartbeat(runner_id: str, body: RunnerHeartbeat | None = None) -> Call[Runner]:
        return Call("POST", f"/api/v1/runners/{_p(runner_id)}/heartbeat", _model(Runner),
                    json=(body or RunnerHeartbeat()).model_dump(mode="json", by_alias=True, exclude_none=True)
                    | ({"idleTimeout": body.idle_timeout} if body and "idle_timeout" in body.model_fields_set else {}))

    @staticmethod
    def get_runner(runner_id: str) -> Call[Runner]:
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}", _model(Runner))

    @staticmethod
    def list_runners() -> Call[RunnerList]:
        return Call("GET", "/api/v1/runners", _model(RunnerList))

    @staticmethod
    def runner_environments(runner_id: str, *, limit: int = 500, cont: str | None = None) -> Call[EnvironmentList]:
        params: dict[str, Any] = {"limit": limit}
        if cont:
            params["continue"] = cont
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}/environments", _model(EnvironmentList), params=params)

    @staticmethod
    def runner_environment(runner_id: str, env_id: str) -> Call[Environment]:
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}/environments/{_p(env_id)}", _model(Environment))

    @staticmethod
    def update_status(env_id: str, status: EnvironmentStatus, *,
                      resource_version: int | None = None) -> Call[Environment]:
        return Call("PUT", f"/api/v1/environments/{_p(env_id)}/status", _model(Environment), json=status.to_wire(),
                    headers=_if_match(resource_version))

    @staticmethod
    def confirm_teardown(runner_id: str, env_id: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/runners/{_p(runner_id)}/environments/{_p(env_id)}", _none)

    # backups (issue 17) ------------------------------------------------------------------------------
    @staticmethod
    def create_backup(env: str, owner: str | None = None) -> Call[Backup]:
        return Call("POST", f"/api/v1/environments/{_p(env)}/backups", _model(Backup), params=_owner(owner))

    @staticmethod
    def list_backups(env: str, owner: str | None = None) -> Call[BackupList]:
        return Call("GET", f"/api/v1/environments/{_p(env)}/backups", _model(BackupList), params=_owner(owner))

    @staticmethod
    def get_backup(env: str, backup_id: str, owner: str | None = None) -> Call[Backup]:
        return Call("GET", f"/api/v1/environments/{_p(env)}/backups/{_p(backup_id)}", _model(Backup),
                    params=_owner(owner))

    @staticmethod
    def delete_backup(env: str, backup_id: str, owner: str | None = None) -> Call[Backup]:
        return Call("DELETE", f"/api/v1/environments/{_p(env)}/backups/{_p(backup_id)}", _model(Backup),
                    params=_owner(owner))

    @staticmethod
    def restore_backup(env: str, backup_id: str, as_: str, labels: dict[str, str] | None = None, *,
                       runner: str | None = None, selector: dict[str, str] | None = None) -> Call[Environment]:
        body: dict[str, Any] = {"as": as_, "labels": labels or {}}
        if runner is not None:
            body["runner"] = runner
        if selector is not None:
            body["runnerSelector"] = selector
        return Call("POST", f"/api/v1/environments/{_p(env)}/backups/{_p(backup_id)}/restore", _model(Environment),
                    json=body)

    @staticmethod
    def list_all_backups(owner: str | None = None) -> Call[BackupList]:
        return Call("GET", "/api/v1/backups", _model(BackupList), params=_owner(owner))

    @staticmethod
    def get_any_backup(backup_id: str, owner: str | None = None) -> Call[Backup]:
        return Call("GET", f"/api/v1/backups/{_p(backup_id)}", _model(Backup), params=_owner(owner))

    @staticmethod
    def runner_expired_backups(runner_id: str) -> Call[BackupList]:
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}/expired-backups", _model(BackupList))

    @staticmethod
    def runner_forgot_backup(runner_id: str, backup_id: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/runners/{_p(runner_id)}/expired-backups/{_p(backup_id)}", _none)

    @staticmethod
    def runner_backup(env_id: str, backup_id: str) -> Call[Backup]:
        return Call("GET", f"/api/v1/environments/{_p(env_id)}/backups/{_p(backup_id)}/status", _model(Backup))

    @staticmethod
    def report_backup(env_id: str, backup_id: str, report: BackupReport) -> Call[Backup]:
        return Call("PUT", f"/api/v1/environments/{_p(env_id)}/backups/{_p(backup_id)}/status", _model(Backup),
                    json=report.to_wire())

    # policy ------------------------------------------------------------------------------------------
    @staticmethod
    def get_policy() -> Call[Policy]:
        return Call("GET", "/api/v1/policy", _model(Policy))

    @staticmethod
    def set_policy(policy: Policy | dict[str, Any]) -> Call[Policy]:
        body = _validate(Policy, policy if isinstance(policy, dict) else policy.to_wire())
        return Call("PUT", "/api/v1/policy", _model(Policy), json=body.to_wire())

    @staticmethod
    def runner_secrets(runner_id: str, env_id: str) -> Call[RunnerSecrets]:
        return Call("GET", f"/api/v1/runners/{_p(runner_id)}/environments/{_p(env_id)}/secrets",
                    _model(RunnerSecrets))

    # secrets -----------------------------------------------------------------------------------------
    @staticmethod
    def put_secret(name: str, value: str, environments: list[str] | None = None) -> Call[Secret]:
        body = _validate(SecretPut, {"value": value, "environments": environments or ["*"]})
        # by hand: dumping a SecretStr writes "**********", which is the point of SecretStr
        return Call("PUT", f"/api/v1/secrets/{_p(name)}", _model(Secret),
                    json={"value": body.value.get_secret_value(), "environments": body.environments})

    @staticmethod
    def list_secrets() -> Call[SecretList]:
        return Call("GET", "/api/v1/secrets", _model(SecretList))

    @staticmethod
    def delete_secret(name: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/secrets/{_p(name)}", _none)

    # users, tokens, audit ----------------------------------------------------------------------------
    @staticmethod
    def whoami() -> Call[User]:
        return Call("GET", "/api/v1/users/me", _model(User))

    @staticmethod
    def create_user(name: str, admin: bool = False, groups: list[str] | None = None) -> Call[UserCreated]:
        return Call("POST", "/api/v1/users", _model(UserCreated),
                    json={"name": name, "admin": admin, "groups": groups or []})

    @staticmethod
    def set_groups(name: str, groups: list[str]) -> Call[User]:
        return Call("PUT", f"/api/v1/users/{_p(name)}/groups", _model(User), json={"groups": groups})

    @staticmethod
    def create_token(body: TokenCreate) -> Call[TokenCreated]:
        return Call("POST", "/api/v1/tokens", _model(TokenCreated),
                    json=body.model_dump(mode="json", by_alias=True, exclude_none=True))

    @staticmethod
    def list_tokens() -> Call[TokenList]:
        return Call("GET", "/api/v1/tokens", _model(TokenList))

    @staticmethod
    def delete_token(token_id: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/tokens/{_p(token_id)}", _none)

    @staticmethod
    def audit_events(*, limit: int = 100, cont: str | None = None, actor: str | None = None,
                     action: str | None = None) -> Call[AuditEventList]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("continue", cont), ("actor", actor), ("action", action)):
            if value:
                params[key] = value
        return Call("GET", "/api/v1/events", _model(AuditEventList), params=params)


class SSEParser:
    """Server-sent events → WatchEvent; an ``ERROR`` event raises the error it carries (e.g. Gone)."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, lines: Iterable[str]) -> Iterator[WatchEvent]:
        for line in lines:
            if line == "":
                if self._data:
                    data, event = "\n".join(self._data), self._event
                    self._data, self._event = [], None
                    yield self._parse(event, data)
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                self._event = value
            elif key == "data":
                self._data.append(value)

    @staticmethod
    def _parse(event: str | None, data: str) -> WatchEvent:
        body = json.loads(data)
        if event == "ERROR" or body.get("type") == "ERROR":
            obj = body.get("object") or {}
            kind, message = str(obj.get("kind", "Error")), str(obj.get("message", "watch failed"))
            if kind == Gone.kind:
                raise Gone(message, hint=obj.get("hint"))
            raise error_for_kind(kind, message, hint=obj.get("hint"))
        return WatchEvent.model_validate(body)
