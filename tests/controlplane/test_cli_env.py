"""`flex login` and `flex env ...` against a real `flex server` process, as a person uses them."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_flex
from tests.controlplane.test_server_cli import _start, _stop


@pytest.fixture
def logged_in(tmp_path: Path) -> Iterator[dict[str, str]]:
    proc, url = _start(tmp_path / "home")
    try:
        token = (tmp_path / "home" / "server" / "admin-token").read_text().strip()
        env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FLEX_URL": "", "FLEX_TOKEN": ""}
        r = run_flex("login", "--server", url, input=token + "\n", env=env)
        assert r.code == 0, r.stderr
        assert "as admin" in r.stdout
        saved = tmp_path / "config" / "flex" / "client.json"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert json.loads(saved.read_text()) == {"server": url, "token": token}
        yield env
    finally:
        _stop(proc)


def test_env_commands_round_trip(logged_in: dict[str, str]) -> None:
    env = logged_in
    r = run_flex("env", "create", "e1", "--git", "https://host/org/repo.git", "--memory", "4Gi", "-e", "A=1",
                 "-l", "team=a", "-o", "json", env=env)
    assert r.code == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["spec"]["resources"]["memory"] == 4 * 2**30 and created["metadata"]["labels"] == {"team": "a"}
    r = run_flex("env", "stop", "e1", env=env)
    assert r.code == 0 and "stopped" in r.stdout
    r = run_flex("env", "list", env=env)
    assert r.code == 0
    line = next(x for x in r.stdout.splitlines() if x.startswith("e1 "))
    assert line.split()[:5] == ["e1", "admin", "stopped", "pending", "2"]
    r = run_flex("env", "get", "e1", "-o", "json", env=env)
    assert json.loads(r.stdout)["metadata"]["generation"] == 2
    r = run_flex("env", "watch", "--resource-version", str(created["metadata"]["resourceVersion"]),
                 "--timeout", "1", env=env)
    assert r.code == 0, r.stderr
    assert [json.loads(x)["type"] for x in r.stdout.splitlines()] == ["MODIFIED"]
    r = run_flex("env", "delete", "e1", env=env)
    assert r.code == 0 and "deleted e1" in r.stdout


def test_env_errors_are_one_line_with_documented_codes(logged_in: dict[str, str], tmp_path: Path) -> None:
    env = logged_in
    r = run_flex("env", "get", "nope", env=env)
    assert r.code == 3 and r.stderr.startswith("error: environment 'nope' not found") and "Traceback" not in r.stderr
    run_flex("env", "create", "e1", "--git", "https://host/org/repo.git", env=env)
    r = run_flex("env", "create", "e1", "--git", "https://host/org/repo.git", env=env)
    assert r.code == 4 and "already exists" in r.stderr
    r = run_flex("env", "create", "e2", env=env)
    assert r.code == 2 and "--git" in r.stderr
    r = run_flex("env", "create", "Bad_Name", "--git", "https://host/org/repo.git", env=env)
    assert r.code == 7 and "name" in r.stderr
    r = run_flex("env", "list", "--token", "flexu_wrong", env=env)
    assert r.code == 5 and "hint:" in r.stderr
    nowhere = {"XDG_CONFIG_HOME": str(tmp_path / "empty"), "FLEX_URL": "", "FLEX_TOKEN": ""}
    r = run_flex("env", "list", env={**nowhere, "FLEX_HOME": str(tmp_path / "no-daemon")})
    # no control plane configured: the verbs talk to the local daemon, which is not running (issue 16)
    assert r.code == 6 and "flex daemon start" in r.stderr and "flex login" in r.stderr


def test_secret_commands_never_take_the_value_from_argv(logged_in: dict[str, str]) -> None:
    env = logged_in
    value = "cli-S3cret-7a6b"
    r = run_flex("secret", "set", "DEPLOY_KEY", "-e", "e1", input=value + "\n", env=env)
    assert r.code == 0 and r.stdout.strip() == "secret DEPLOY_KEY set for e1", r.stderr
    r = run_flex("secret", "ls", "-o", "json", env=env)
    assert r.code == 0 and [(s["name"], s["environments"]) for s in json.loads(r.stdout)] == [("DEPLOY_KEY", ["e1"])]
    assert value not in r.stdout
    r = run_flex("secret", "set", "DEPLOY_KEY", value, env=env)  # a value on the command line is refused
    assert r.code == 2 and value not in r.stderr
    r = run_flex("secret", "rm", "DEPLOY_KEY", env=env)
    assert r.code == 0
    r = run_flex("secret", "rm", "DEPLOY_KEY", env=env)
    assert r.code == 3 and r.stderr.startswith("error: secret 'DEPLOY_KEY' not found")
