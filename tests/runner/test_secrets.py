"""Secrets reach the container of the right environment only (docs/security.md, "Secrets"): a real
`flex server`, a real `flex runner run`, real containers. A secret scoped to one environment is in that
container's environment and not in its sibling's; a secret wins over a spec.env entry of the same name; no
value lands in status, the runner's log or the hook log."""

from __future__ import annotations

import pytest

from tests.runner.conftest import GitServer, Runner, Server, devcontainer, wait_for

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

ONLY_ONE = "s3cr3t-for-one-only"
EVERYWHERE = "s3cr3t-shared"


def test_secrets_reach_only_their_environments_containers(server: Server, runner: Runner, git_server: GitServer,
                                                          image: str) -> None:
    url = git_server.repo("sec", devcontainer(image, postCreateCommand="env | sort > /var/tmp/hook-env"))
    server.admin.put_secret("ONLY_ONE", ONLY_ONE, ["one"])
    server.admin.put_secret("SHARED", EVERYWHERE, ["*"])
    runner.join(server)
    runner.start()
    ids = {}
    for name in ("one", "two"):
        server.admin.create_environment(name, {"source": {"git": url}, "env": {"SHARED": "plain", "PLAIN": "p"}})
    for name in ("one", "two"):
        env = wait_for(server.admin, name, lambda e: e.status.phase == "running", runner)
        ids[name] = env.metadata.id
        assert ONLY_ONE not in env.model_dump_json() and EVERYWHERE not in env.model_dump_json()

    def seen(name: str) -> str:
        [c] = runner.containers(ids[name])
        return runner.exec(c["id"], 'echo "${ONLY_ONE:-unset} $SHARED $PLAIN"')

    assert seen("one") == f"{ONLY_ONE} {EVERYWHERE} p\n"
    assert seen("two") == f"unset {EVERYWHERE} p\n"
    assert ONLY_ONE not in runner.text() and EVERYWHERE not in runner.text()
    for env_id in ids.values():
        hooks_log = runner.mode.home / "runner" / "logs" / env_id / "hooks.log"
        assert not hooks_log.exists() or EVERYWHERE not in hooks_log.read_text()
    for name in ("one", "two"):
        server.admin.delete_environment(name)
