"""Fixtures of the web UI's browser tests: one real `flex server` process per module, people to sign in as,
and a runner joined through the API that reports status (the real runner is in tests/runner/test_ui.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.controlplane.server_process import ServerProcess, start
from tests.ui.browser import browser_context_args, browser_type_launch_args  # noqa: F401  (fixtures)


@dataclass
class Flex:
    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin_token(self) -> str:
        return self.server.admin_token

    def api(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token or self.admin_token)

    def user(self, name: str | None = None) -> tuple[str, str]:
        name = name or "u" + uuid.uuid4().hex[:8]
        with self.api() as c:
            r = c.post("/api/v1/users", json={"name": name})
            assert r.status_code == 201, r.text
            return name, r.json()["token"]

    def create(self, token: str, name: str, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "spec": {"source": {"git": "git://127.0.0.1:9/none.git"}}, **extra}
        with self.api(token) as c:
            r = c.post("/api/v1/environments", json=body)
            assert r.status_code == 201, r.text
            return r.json()  # type: ignore[no-any-return]

    def runner(self, name: str) -> tuple[str, str]:
        """(id, credential) of a runner joined over the API, as `flex runner join` does."""
        with self.api() as c:
            token = c.post("/api/v1/runners/join-tokens", json={}).json()["token"]
            r = c.post("/api/v1/runners:join", json={"token": token, "name": name, "kind": "vm",
                                                      "capacity": {"cpus": 8, "memory": "16Gi", "disk": "100Gi"}})
            assert r.status_code == 201, r.text
            return r.json()["id"], r.json()["credential"]

    def report(self, credential: str, env: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """What a runner does: PUT the observed status of an environment bound to it."""
        with self.api(credential) as c:
            current = c.get(f"/api/v1/runners/{status['runnerId']}/environments/{env['metadata']['id']}").json()
            r = c.put(f"/api/v1/environments/{env['metadata']['id']}/status", json=status,
                      headers={"If-Match": str(current["metadata"]["resourceVersion"])})
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def flex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flex]:
    server = start(tmp_path_factory.mktemp("ui") / "home")
    try:
        yield Flex(server)
    finally:
        server.stop()
