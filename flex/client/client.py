"""FlexClient (sync) and AsyncFlexClient: typed access to the REST API over httpx, raising flex.errors.

    client = FlexClient("http://127.0.0.1:8080", token)
    env = client.create_environment("e1", git="https://host/org/repo.git")
    client.stop_environment("e1", resource_version=env.metadata.resource_version)   # Conflict if stale

Pass ``transport=httpx.ASGITransport(app)`` to AsyncFlexClient to talk to an app in-process; a base URL
``unix:/path/to.sock`` talks HTTP over that unix socket (the local daemon, `flex daemon`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from flex.api import (
    AuditEventList,
    Backup,
    BackupList,
    BackupReport,
    BackupRepository,
    Environment,
    EnvironmentList,
    EnvironmentSpec,
    EnvironmentStatus,
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
    TokenCreate,
    TokenCreated,
    TokenList,
    User,
    UserCreated,
    WatchEvent,
)
from flex.client.calls import Call, Calls, SSEParser, error_from_response, raise_for_status
from flex.errors import Unavailable, UsageError

__all__ = ["AsyncFlexClient", "FlexClient", "unix_socket"]

T = TypeVar("T")
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def unix_socket(base_url: str) -> str | None:
    """The socket path of a ``unix:/path/to.sock`` URL (the local daemon), else None."""
    return base_url[len("unix:"):] if base_url.startswith("unix:") else None


def _from_env() -> tuple[str, str | None]:
    url = os.environ.get("FLEX_URL")
    if not url:
        raise UsageError("FLEX_URL is not set", hint="export FLEX_URL=http://host:8080 and FLEX_TOKEN=<token>")
    return url, os.environ.get("FLEX_TOKEN")


class FlexClient:
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(self, base_url: str, token: str | None = None, *, transport: httpx.BaseTransport | None = None,
                 timeout: httpx.Timeout | float = _TIMEOUT) -> None:
        sock = unix_socket(base_url)
        self.where = base_url
        if sock is not None and transport is None:
            base_url, transport = "http://flex", httpx.HTTPTransport(uds=sock)
        self._http = httpx.Client(base_url=base_url, headers=_headers(token), transport=transport, timeout=timeout)

    @classmethod
    def from_env(cls) -> FlexClient:
        url, token = _from_env()
        return cls(url, token)

    def __enter__(self) -> FlexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        try:
            r = self._http.request(call.method, call.path, params=call.params, json=call.json, headers=call.headers)
        except httpx.TransportError as err:
            raise Unavailable(f"cannot reach the control plane at {self.where}: {err}") from err
        raise_for_status(r)
        return call.parse(r)

    def _watch(self, path: str, resource_version: int | None, timeout: float | None) -> Iterator[WatchEvent]:
        params = Calls.watch_params(resource_version, timeout)
        try:
            with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise error_from_response(r)
                yield from SSEParser().feed(r.iter_lines())
        except httpx.TransportError as err:
            raise Unavailable(f"the watch on {path} broke: {err}") from err

    # environments
    def create_environment(self, name: str, spec: EnvironmentSpec | dict[str, Any] | None = None, *,
                           git: str | None = None, labels: dict[str, str] | None = None) -> Environment:
        return self._run(Calls.create_environment(name, spec, git=git, labels=labels))

    def get_environment(self, name: str, owner: str | None = None) -> Environment:
        return self._run(Calls.get_environment(name, owner))

    def list_environments(self, *, limit: int = 100, cont: str | None = None, owner: str | None = None,
                          labels: dict[str, str] | None = None, phase: str | None = None) -> EnvironmentList:
        return self._run(Calls.list_environments(limit=limit, cont=cont, owner=owner, labels=labels, phase=phase))

    def iter_environments(self, **filters: Any) -> Iterator[Environment]:
        cont: str | None = None
        while True:
            page = self.list_environments(cont=cont, **filters)
            yield from page.items
            cont = page.metadata.continue_
            if not cont:
                return

    def patch_environment(self, name: str, patch: dict[str, Any], *, resource_version: int | None = None,
                          owner: str | None = None) -> Environment:
        return self._run(Calls.patch_environment(name, patch, resource_version=resource_version, owner=owner))

    def start_environment(self, name: str, *, resource_version: int | None = None,
                          owner: str | None = None) -> Environment:
        return self._run(Calls.set_phase(name, "start", resource_version=resource_version, owner=owner))

    def stop_environment(self, name: str, *, resource_version: int | None = None,
                         owner: str | None = None) -> Environment:
        return self._run(Calls.set_phase(name, "stop", resource_version=resource_version, owner=owner))

    def rebuild_environment(self, name: str, *, resource_version: int | None = None,
                            owner: str | None = None) -> Environment:
        """A new container from the same spec, on the same workspace volume (POST :rebuild)."""
        return self._run(Calls.set_phase(name, "rebuild", resource_version=resource_version, owner=owner))

    def move_environment(self, name: str, runner: str | None = None, selector: dict[str, str] | None = None, *,
                         owner: str | None = None) -> Environment:
        """POST :move: to ``runner`` (a name or id), or to a runner with the labels ``selector`` (issue 17.5)."""
        return self._run(Calls.move_environment(name, runner, selector, owner=owner))

    def runner_backup_repository(self, runner_id: str) -> BackupRepository:
        """Runner only: the server's shared backup repository and its password."""
        return self._run(Calls.runner_backup_repository(runner_id))

    def delete_environment(self, name: str, *, resource_version: int | None = None,
                           owner: str | None = None, force: bool = False) -> Environment:
        """``force`` (admins): gone at once, without waiting for its runner to tear it down."""
        return self._run(Calls.delete_environment(name, resource_version=resource_version, owner=owner,
                                                     force=force))

    def watch_environments(self, resource_version: int | None = None, *,
                           timeout: float | None = None) -> Iterator[WatchEvent]:
        return self._watch("/api/v1/environments", resource_version, timeout)

    # backups (issue 17)
    def create_backup(self, env: str, owner: str | None = None) -> Backup:
        return self._run(Calls.create_backup(env, owner))

    def list_backups(self, env: str, owner: str | None = None) -> BackupList:
        return self._run(Calls.list_backups(env, owner))

    def get_backup(self, env: str, backup_id: str, owner: str | None = None) -> Backup:
        return self._run(Calls.get_backup(env, backup_id, owner))

    def delete_backup(self, env: str, backup_id: str, owner: str | None = None) -> Backup:
        return self._run(Calls.delete_backup(env, backup_id, owner))

    def restore_backup(self, env: str, backup_id: str, as_: str, labels: dict[str, str] | None = None, *,
                       runner: str | None = None, selector: dict[str, str] | None = None) -> Environment:
        """A new environment ``as_``; ``runner``/``selector``: where, for a backup in the shared repository."""
        return self._run(Calls.restore_backup(env, backup_id, as_, labels, runner=runner, selector=selector))

    def list_all_backups(self, owner: str | None = None) -> BackupList:
        """All your backups, deleted environments' too (``environment_deleted``, ``expires_at``)."""
        return self._run(Calls.list_all_backups(owner))

    def get_any_backup(self, backup_id: str, owner: str | None = None) -> Backup:
        return self._run(Calls.get_any_backup(backup_id, owner))

    def runner_expired_backups(self, runner_id: str) -> BackupList:
        return self._run(Calls.runner_expired_backups(runner_id))

    def runner_forgot_backup(self, runner_id: str, backup_id: str) -> None:
        self._run(Calls.runner_forgot_backup(runner_id, backup_id))

    def runner_backup(self, env_id: str, backup_id: str) -> Backup:
        return self._run(Calls.runner_backup(env_id, backup_id))

    def report_backup(self, env_id: str, backup_id: str, report: BackupReport) -> Backup:
        return self._run(Calls.report_backup(env_id, backup_id, report))

    # runners
    def create_join_token(self, grant: RunnerGrant | dict[str, Any] | None = None) -> JoinToken:
        return self._run(Calls.create_join_token(grant))

    def join(self, token: str, name: str, kind: str, capacity: RunnerCapacity | dict[str, Any],
             labels: dict[str, str] | None = None, *, rootless: bool = False,
             id_ranges: int = 0) -> JoinResponse:
        return self._run(Calls.join(token, name, kind, capacity, labels, rootless=rootless, id_ranges=id_ranges))

    def list_runners(self) -> RunnerList:
        return self._run(Calls.list_runners())

    def cordon_runner(self, runner: str) -> Runner:
        return self._run(Calls.runner_verb(runner, "cordon"))

    def uncordon_runner(self, runner: str) -> Runner:
        return self._run(Calls.runner_verb(runner, "uncordon"))

    def drain_runner(self, runner: str) -> Runner:
        return self._run(Calls.runner_verb(runner, "drain"))

    def revoke_runner(self, runner: str) -> Runner:
        return self._run(Calls.runner_verb(runner, "revoke"))

    def rotate_runner(self, runner: str) -> JoinResponse:
        return self._run(Calls.rotate_runner(runner))

    def delete_runner(self, runner: str) -> None:
        self._run(Calls.delete_runner(runner))

    def heartbeat(self, runner_id: str, body: RunnerHeartbeat | None = None) -> Runner:
        return self._run(Calls.heartbeat(runner_id, body))

    def get_runner(self, runner_id: str) -> Runner:
        return self._run(Calls.get_runner(runner_id))

    def runner_environments(self, runner_id: str, *, limit: int = 500, cont: str | None = None) -> EnvironmentList:
        return self._run(Calls.runner_environments(runner_id, limit=limit, cont=cont))

    def runner_environment(self, runner_id: str, env_id: str) -> Environment:
        return self._run(Calls.runner_environment(runner_id, env_id))

    def watch_runner_environments(self, runner_id: str, resource_version: int | None = None, *,
                                  timeout: float | None = None) -> Iterator[WatchEvent]:
        return self._watch(f"/api/v1/runners/{runner_id}/environments", resource_version, timeout)

    def update_status(self, env_id: str, status: EnvironmentStatus, *,
                      resource_version: int | None = None) -> Environment:
        return self._run(Calls.update_status(env_id, status, resource_version=resource_version))

    def confirm_teardown(self, runner_id: str, env_id: str) -> None:
        self._run(Calls.confirm_teardown(runner_id, env_id))

    def runner_secrets(self, runner_id: str, env_id: str) -> RunnerSecrets:
        return self._run(Calls.runner_secrets(runner_id, env_id))

    # secrets
    def put_secret(self, name: str, value: str, environments: list[str] | None = None) -> Secret:
        return self._run(Calls.put_secret(name, value, environments))

    def list_secrets(self) -> SecretList:
        return self._run(Calls.list_secrets())

    def delete_secret(self, name: str) -> None:
        self._run(Calls.delete_secret(name))

    # users, tokens, audit
    def get_policy(self) -> Policy:
        return self._run(Calls.get_policy())

    def set_policy(self, policy: Policy | dict[str, Any]) -> Policy:
        """Admins: replace the installation's policy."""
        return self._run(Calls.set_policy(policy))

    def whoami(self) -> User:
        return self._run(Calls.whoami())

    def create_user(self, name: str, admin: bool = False, groups: list[str] | None = None) -> UserCreated:
        return self._run(Calls.create_user(name, admin, groups))

    def set_groups(self, name: str, groups: list[str]) -> User:
        """Admins: replace a user's groups."""
        return self._run(Calls.set_groups(name, groups))

    def create_token(self, body: TokenCreate | None = None) -> TokenCreated:
        return self._run(Calls.create_token(body or TokenCreate()))

    def list_tokens(self) -> TokenList:
        return self._run(Calls.list_tokens())

    def delete_token(self, token_id: str) -> None:
        self._run(Calls.delete_token(token_id))

    def audit_events(self, *, limit: int = 100, cont: str | None = None, actor: str | None = None,
                     action: str | None = None) -> AuditEventList:
        return self._run(Calls.audit_events(limit=limit, cont=cont, actor=actor, action=action))


class AsyncFlexClient:
    """The same API for asyncio (the runner's reconcile loop uses this one)."""

    def __init__(self, base_url: str, token: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: httpx.Timeout | float = _TIMEOUT) -> None:
        sock = unix_socket(base_url)
        self.where = base_url
        if sock is not None and transport is None:
            base_url, transport = "http://flex", httpx.AsyncHTTPTransport(uds=sock)
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(token), transport=transport,
                                       timeout=timeout)

    @classmethod
    def from_env(cls) -> AsyncFlexClient:
        url, token = _from_env()
        return cls(url, token)

    async def __aenter__(self) -> AsyncFlexClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        try:
            r = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                         headers=call.headers)
        except httpx.TransportError as err:
            raise Unavailable(f"cannot reach the control plane at {self.where}: {err}") from err
        raise_for_status(r)
        return call.parse(r)

    async def _watch(self, path: str, resource_version: int | None,
                     timeout: float | None) -> AsyncIterator[WatchEvent]:
        params = Calls.watch_params(resource_version, timeout)
        parser = SSEParser()
        try:
            async with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise error_from_response(r)
                async for line in r.aiter_lines():
                    for ev in parser.feed([line]):
                        yield ev
        except httpx.TransportError as err:
            raise Unavailable(f"the watch on {path} broke: {err}") from err

    # environments
    async def create_environment(self, name: str, spec: EnvironmentSpec | dict[str, Any] | None = None, *,
                                 git: str | None = None, labels: dict[str, str] | None = None) -> Environment:
        return await self._run(Calls.create_environment(name, spec, git=git, labels=labels))

    async def get_environment(self, name: str, owner: str | None = None) -> Environment:
        return await self._run(Calls.get_environment(name, owner))

    async def list_environments(self, *, limit: int = 100, cont: str | None = None, owner: str | None = None,
                                labels: dict[str, str] | None = None, phase: str | None = None) -> EnvironmentList:
        return await self._run(Calls.list_environments(limit=limit, cont=cont, owner=owner, labels=labels,
                                                       phase=phase))

    async def patch_environment(self, name: str, patch: dict[str, Any], *, resource_version: int | None = None,
                                owner: str | None = None) -> Environment:
        return await self._run(Calls.patch_environment(name, patch, resource_version=resource_version, owner=owner))

    async def start_environment(self, name: str, *, resource_version: int | None = None,
                                owner: str | None = None) -> Environment:
        return await self._run(Calls.set_phase(name, "start", resource_version=resource_version, owner=owner))

    async def stop_environment(self, name: str, *, resource_version: int | None = None,
                               owner: str | None = None) -> Environment:
        return await self._run(Calls.set_phase(name, "stop", resource_version=resource_version, owner=owner))

    async def rebuild_environment(self, name: str, *, resource_version: int | None = None,
                                  owner: str | None = None) -> Environment:
        return await self._run(Calls.set_phase(name, "rebuild", resource_version=resource_version, owner=owner))

    async def move_environment(self, name: str, runner: str | None = None, selector: dict[str, str] | None = None,
                               *, owner: str | None = None) -> Environment:
        return await self._run(Calls.move_environment(name, runner, selector, owner=owner))

    async def runner_backup_repository(self, runner_id: str) -> BackupRepository:
        return await self._run(Calls.runner_backup_repository(runner_id))

    async def report_backup(self, env_id: str, backup_id: str, report: BackupReport) -> Backup:
        return await self._run(Calls.report_backup(env_id, backup_id, report))

    async def create_backup(self, env: str, owner: str | None = None) -> Backup:
        return await self._run(Calls.create_backup(env, owner))

    async def get_backup(self, env: str, backup_id: str, owner: str | None = None) -> Backup:
        return await self._run(Calls.get_backup(env, backup_id, owner))

    async def list_backups(self, env: str, owner: str | None = None) -> BackupList:
        return await self._run(Calls.list_backups(env, owner))

    async def list_all_backups(self, owner: str | None = None) -> BackupList:
        return await self._run(Calls.list_all_backups(owner))

    async def get_any_backup(self, backup_id: str, owner: str | None = None) -> Backup:
        return await self._run(Calls.get_any_backup(backup_id, owner))

    async def restore_backup(self, env: str, backup_id: str, as_: str, labels: dict[str, str] | None = None, *,
                             runner: str | None = None, selector: dict[str, str] | None = None) -> Environment:
        return await self._run(Calls.restore_backup(env, backup_id, as_, labels, runner=runner, selector=selector))

    async def runner_expired_backups(self, runner_id: str) -> BackupList:
        return await self._run(Calls.runner_expired_backups(runner_id))

    async def runner_forgot_backup(self, runner_id: str, backup_id: str) -> None:
        await self._run(Calls.runner_forgot_backup(runner_id, backup_id))

    async def delete_environment(self, name: str, *, resource_version: int | None = None,
                                 owner: str | None = None, force: bool = False) -> Environment:
        """``force`` (admins): gone at once, without waiting for its runner to tear it down."""
        return await self._run(Calls.delete_environment(name, resource_version=resource_version, owner=owner,
                                                     force=force))

    def watch_environments(self, resource_version: int | None = None, *,
                           timeout: float | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch("/api/v1/environments", resource_version, timeout)

    # runners
    async def create_join_token(self, grant: RunnerGrant | dict[str, Any] | None = None) -> JoinToken:
        return await self._run(Calls.create_join_token(grant))

    async def join(self, token: str, name: str, kind: str, capacity: RunnerCapacity | dict[str, Any],
                   labels: dict[str, str] | None = None, *, rootless: bool = False,
                   id_ranges: int = 0) -> JoinResponse:
        return await self._run(Calls.join(token, name, kind, capacity, labels, rootless=rootless, id_ranges=id_ranges))

    async def list_runners(self) -> RunnerList:
        return await self._run(Calls.list_runners())

    async def cordon_runner(self, runner: str) -> Runner:
        return await self._run(Calls.runner_verb(runner, "cordon"))

    async def uncordon_runner(self, runner: str) -> Runner:
        return await self._run(Calls.runner_verb(runner, "uncordon"))

    async def drain_runner(self, runner: str) -> Runner:
        return await self._run(Calls.runner_verb(runner, "drain"))

    async def revoke_runner(self, runner: str) -> Runner:
        return await self._run(Calls.runner_verb(runner, "revoke"))

    async def rotate_runner(self, runner: str) -> JoinResponse:
        return await self._run(Calls.rotate_runner(runner))

    async def delete_runner(self, runner: str) -> None:
        await self._run(Calls.delete_runner(runner))

    async def heartbeat(self, runner_id: str, body: RunnerHeartbeat | None = None) -> Runner:
        return await self._run(Calls.heartbeat(runner_id, body))

    async def get_runner(self, runner_id: str) -> Runner:
        return await self._run(Calls.get_runner(runner_id))

    async def runner_environments(self, runner_id: str, *, limit: int = 500,
                                  cont: str | None = None) -> EnvironmentList:
        return await self._run(Calls.runner_environments(runner_id, limit=limit, cont=cont))

    async def runner_environment(self, runner_id: str, env_id: str) -> Environment:
        return await self._run(Calls.runner_environment(runner_id, env_id))

    def watch_runner_environments(self, runner_id: str, resource_version: int | None = None, *,
                                  timeout: float | None = None) -> AsyncIterator[WatchEvent]:
        return self._watch(f"/api/v1/runners/{runner_id}/environments", resource_version, timeout)

    async def update_status(self, env_id: str, status: EnvironmentStatus, *,
                            resource_version: int | None = None) -> Environment:
        return await self._run(Calls.update_status(env_id, status, resource_version=resource_version))

    async def confirm_teardown(self, runner_id: str, env_id: str) -> None:
        await self._run(Calls.confirm_teardown(runner_id, env_id))

    async def runner_secrets(self, runner_id: str, env_id: str) -> RunnerSecrets:
        return await self._run(Calls.runner_secrets(runner_id, env_id))

    # secrets
    async def put_secret(self, name: str, value: str, environments: list[str] | None = None) -> Secret:
        return await self._run(Calls.put_secret(name, value, environments))

    async def list_secrets(self) -> SecretList:
        return await self._run(Calls.list_secrets())

    async def delete_secret(self, name: str) -> None:
        await self._run(Calls.delete_secret(name))

    # users, tokens, audit
    async def get_policy(self) -> Policy:
        return await self._run(Calls.get_policy())

    async def set_policy(self, policy: Policy | dict[str, Any]) -> Policy:
        """Admins: replace the installation's policy."""
        return await self._run(Calls.set_policy(policy))

    async def whoami(self) -> User:
        return await self._run(Calls.whoami())

    async def create_user(self, name: str, admin: bool = False, groups: list[str] | None = None) -> UserCreated:
        return await self._run(Calls.create_user(name, admin, groups))

    async def set_groups(self, name: str, groups: list[str]) -> User:
        """Admins: replace a user's groups."""
        return await self._run(Calls.set_groups(name, groups))

    async def create_token(self, body: TokenCreate | None = None) -> TokenCreated:
        return await self._run(Calls.create_token(body or TokenCreate()))

    async def list_tokens(self) -> TokenList:
        return await self._run(Calls.list_tokens())

    async def delete_token(self, token_id: str) -> None:
        await self._run(Calls.delete_token(token_id))

    async def audit_events(self, *, limit: int = 100, cont: str | None = None, actor: str | None = None,
                           action: str | None = None) -> AuditEventList:
        return await self._run(Calls.audit_events(limit=limit, cont=cont, actor=actor, action=action))
