"""`flex ssh --stdio`'s lean path (flex/cli/fast_ssh.py, flex/cli/fast_target.py) finds the same control plane
and token as every other verb (flex/cli/target.py), and leaves anything else to the full command. Its carrying of
SSH bytes is checked end to end in tests/runner/ssh_checks.py and tests/daemon/test_up.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flex.cli.fast_ssh import fast_ssh_stdio
from flex.cli.fast_target import config_dir, target
from flex.cli.ssh_config import known_hosts_path
from flex.cli.target import endpoint


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for k in ("FLEX_URL", "FLEX_TOKEN", "FLEX_DEBUG"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def _login(home: Path, server: str | None, token: str | None) -> None:
    (home / "flex").mkdir(exist_ok=True)
    (home / "flex" / "client.json").write_text(json.dumps({"server": server, "token": token}))


@pytest.mark.parametrize(("env", "saved", "server"), [
    ({"FLEX_URL": "http://cp:8080/", "FLEX_TOKEN": "flexu_env"}, None, None),
    ({"FLEX_URL": "http://cp:8080"}, ("https://saved.example", "flexu_saved"), None),
    ({}, ("https://saved.example", "flexu_saved"), None),
    ({"FLEX_TOKEN": "flexu_env"}, ("https://saved.example", "flexu_saved"), None),
    ({}, ("https://saved.example", "flexu_saved"), "http://other:9000"),
    ({"FLEX_URL": "http://cp:8080"}, None, None),
])
def test_the_same_target_as_every_verb(config_home: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                       saved: tuple[str, str] | None, server: str | None) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if saved:
        _login(config_home, *saved)
    assert target(server) == endpoint(server, None)


def test_what_the_full_command_must_answer(config_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_URL", "cp:8080")  # no scheme: the full command says so (exit 2)
    assert target(None) is None
    _login(config_home, None, "flexu_saved")
    monkeypatch.delenv("FLEX_URL")
    assert target(None) is None  # a saved login without a server: the full command says how to log in
    for argv in (["ssh", "--stdio", "--debug", "web"], ["ssh", "--stdio"], ["ssh", "web"],
                 ["ssh", "--stdio", "--token", "t", "web"]):
        assert fast_ssh_stdio(argv) is None
    monkeypatch.setenv("FLEX_URL", "http://127.0.0.1:1")  # nothing listens: the full command reports it
    assert fast_ssh_stdio(["ssh", "--stdio", "web.flex"]) is None


def test_the_same_known_hosts(config_home: Path) -> None:
    assert Path(config_dir()) / "ssh" / "known_hosts" == known_hosts_path()
