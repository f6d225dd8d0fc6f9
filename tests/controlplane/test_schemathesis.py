"""A bounded schemathesis run against /openapi.json over real HTTP: no 5xx, no answer that breaks the schema.

Every operation gets generated requests (valid and invalid ones) as an admin, a plain user and a runner;
each answer must be documented, match its schema and content type, and never be a server error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controlplane.conftest import free_port

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")


class _Served:
    def __init__(self, tmp: Path) -> None:
        import uvicorn

        from flex.controlplane.app import create_app
        from flex.controlplane.config import Settings

        self.app = create_app(Settings(server_dir=tmp, sweep_interval=0.5, auth_failures_per_minute=100_000))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = (tmp / "admin-token").read_text().strip()

    def __enter__(self) -> _Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Served, dict[str, str]]]:
    with _Served(tmp_path_factory.mktemp("schemathesis")) as s:
        from flex.client import FlexClient

        with FlexClient(s.url, s.admin) as admin:
            user = admin.create_user("fuzz").token
            join = admin.create_join_token().token
            with FlexClient(s.url, user) as fuzz:
                fuzz.create_environment("e1", git="https://host/org/repo.git")
            runner = admin.join(join, "r1", "vm", {"cpus": 4, "memory": "8Gi", "disk": "40Gi"}).credential
        yield s, {"admin": s.admin, "user": user, "runner": runner}


def test_openapi_fuzz_finds_no_server_error_and_no_schema_break(served: tuple[_Served, dict[str, str]]) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode, checks

    server, tokens = served
    spec = httpx.get(server.url + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    wanted = [checks.not_a_server_error, checks.response_schema_conformance, checks.status_code_conformance,
              checks.content_type_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    budget = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 8}
    calls = 0
    started = time.monotonic()
    for operation in operations:
        for mode, examples in budget.items():
            @given(case=operation.as_strategy(generation_mode=mode), who=st.sampled_from(sorted(tokens)))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any, who: str) -> None:
                nonlocal calls
                calls += 1
                # watch=1 would stream until timeoutSeconds; watches have their own tests
                case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {tokens[who]}"},
                                       params={"watch": "false"}, checks=wanted, timeout=30)

            try:
                run()
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise  # an operation without inputs has no invalid request to make; every one has valid ones
    assert calls > 300
    assert time.monotonic() - started < 600

