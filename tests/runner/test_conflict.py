"""Status is written with If-Match: when someone else wrote between the runner's read and its write, the
runner's reconcile stops with Conflict (the queue reads again and retries) and overwrites nothing. A real
server, a real second writer (the user changing the spec at that moment), the runner's own reconcile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flex.api import EnvironmentStatus
from flex.client import FlexClient
from flex.errors import Conflict
from flex.runner.capacity import machine_capacity
from flex.runner.machine import Machine
from flex.runner.reconcile import Ctx, reconcile
from tests.runner.conftest import Server, unmount_disk_images

pytestmark = pytest.mark.userns


class _Racing(FlexClient):
    """The runner's client; just before its first status write, the user patches the environment."""

    def __init__(self, url: str, token: str, race: Any) -> None:
        super().__init__(url, token)
        self.race, self.writes = race, 0

    def update_status(self, env_id: str, status: EnvironmentStatus, *,
                      resource_version: int | None = None) -> Any:
        self.writes += 1
        if self.writes == 1:
            self.race()
        return super().update_status(env_id, status, resource_version=resource_version)


def test_a_status_write_after_someone_elses_conflicts_and_overwrites_nothing(server: Server, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the runner's machine is a root runtime home here")
    joined = server.admin.join(server.join_token({"labels": {}}), "racer", "vm", machine_capacity(tmp_path))
    server.admin.create_environment("raced", {"source": {"git": "git://127.0.0.1:9/none.git"},
                                              "resources": {"cpus": 0.1, "memory": "64Mi", "disk": "64Mi"}})
    env_id = server.admin.get_environment("raced").metadata.id

    def race() -> None:
        server.admin.patch_environment("raced", {"spec": {"env": {"CHANGED": "meanwhile"}}})

    with _Racing(server.url, joined.credential, race) as client:
        client.heartbeat(joined.id)
        ctx = Ctx(client=client, runner_id=joined.id, kind="vm", home=tmp_path / "home", machine=Machine(
            tmp_path / "home"))
        before = server.admin.get_environment("raced")
        try:
            with pytest.raises(Conflict):
                reconcile(ctx, env_id)
        finally:  # the volume's disk image it mounted first: pytest could not remove tmp_path otherwise
            unmount_disk_images(tmp_path / "home")
        assert client.writes == 1
        after = server.admin.get_environment("raced")
        assert after.spec.env == {"CHANGED": "meanwhile"}  # the other write stands
        assert after.status.phase == before.status.phase == "pending"  # and the runner's stale one never landed
        assert after.metadata.generation == before.metadata.generation + 1
