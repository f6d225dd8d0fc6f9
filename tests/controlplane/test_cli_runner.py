"""`flex runner ...` and `flex rm --force` against a real `flex server` process, as an admin uses them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from flex.client import FlexClient
from tests.conftest import run_flex
from tests.controlplane import test_cli_env

logged_in = test_cli_env.logged_in  # the fixture: a real `flex server`, and the CLI logged in to it as admin

GIT = "https://host/org/repo.git"


def _url(env: dict[str, str]) -> str:
    saved = json.loads((Path(env["XDG_CONFIG_HOME"]) / "flex" / "client.json").read_text())
    return str(saved["server"])


def test_runner_commands_and_force_rm(logged_in: dict[str, str]) -> None:
    env = logged_in
    url = _url(env)
    r = run_flex("runner", "join-token", "--label", "zone=*", "--max-cpus", "8", "--max-memory", "32Gi",
                 "--max-disk", "1Ti", env=env)
    assert r.code == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("flexj_") and "single use" in r.stderr
    with FlexClient(url) as anon:
        joined = anon.join(token, "vm1", "vm", {"cpus": 8, "memory": "32Gi", "disk": "500Gi"}, {"zone": "eu"})
    r = run_flex("env", "create", "e1", "--git", GIT, "--disk", "20Gi", "-o", "json", env=env)
    assert r.code == 0 and json.loads(r.stdout)["status"]["runnerId"] == joined.id
    r = run_flex("env", "get", "e1", env=env)
    assert "20Gi disk (the disk limit is enforced by the runner)" in r.stdout
    r = run_flex("runner", "ls", env=env)
    assert r.code == 0
    row = next(x for x in r.stdout.splitlines() if x.startswith("vm1 ")).split()
    # this runner never heartbeats: on a slow machine it may be offline by now, which is beside the point here
    assert row[:2] == ["vm1", "vm"] and row[2] in ("ready", "offline") and row[3:5] == ["-", "1"]
    r = run_flex("runner", "cordon", "vm1", env=env)
    assert r.code == 0 and "cordoned vm1" in r.stdout
    assert ",cordoned" in run_flex("runner", "ls", env=env).stdout
    r = run_flex("runner", "drain", "vm1", env=env)
    assert r.code == 1 and r.stderr.startswith("error: runner 'vm1' has 1 environment") and "hint:" in r.stderr
    r = run_flex("runner", "rm", "vm1", env=env)
    assert r.code == 1 and "still has 1 environment" in r.stderr and "Traceback" not in r.stderr
    r = run_flex("runner", "uncordon", joined.id, env=env)
    assert r.code == 0 and "uncordoned vm1" in r.stdout
    r = run_flex("runner", "rotate", "vm1", env=env)
    assert r.code == 0 and r.stdout.strip().startswith("flexr_")
    rotated = r.stdout.strip()

    def heartbeat(credential: str) -> int:
        return httpx.post(f"{url}/api/v1/runners/{joined.id}/heartbeat", json={},
                          headers={"Authorization": f"Bearer {credential}"}).status_code

    assert heartbeat(joined.credential) == 401 and heartbeat(rotated) == 200
    r = run_flex("runner", "revoke", "vm1", env=env)
    assert r.code == 0 and "revoked the credential of vm1" in r.stdout
    assert heartbeat(rotated) == 401
    # the runner is gone for good: force-delete what it left, then delete it
    r = run_flex("rm", "e1", env=env)
    assert r.code == 0 and "deleting e1" in r.stdout
    r = run_flex("rm", "--force", "e1", env=env)
    assert r.code == 0 and "deleted e1" in r.stdout
    r = run_flex("env", "get", "e1", env=env)
    assert r.code == 3
    r = run_flex("runner", "rm", "vm1", env=env)
    assert r.code == 0 and "deleted vm1" in r.stdout
    r = run_flex("runner", "cordon", "vm1", env=env)
    assert r.code == 3 and "not found" in r.stderr
