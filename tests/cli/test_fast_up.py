"""`flex up`'s lean path (flex/cli/fast_up.py) answers only when the full command (flex/cli/up.py) would send no
patch and find the environment Ready, reads a folder as the full command does, and leaves everything else to
it. Its output against a real daemon is checked end to end in tests/daemon/test_up.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flex.api import Environment
from flex.cli.fast_up import _read, fast_up, unchanged_and_ready
from flex.cli.up import _patch
from flex.cli.up_source import Desired, desired
from flex.cli.up_wait import is_ready
from flex.runtime.containers.lookup import recorded_container_id


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in ("FLEX_URL", "FLEX_TOKEN", "FLEX_DEBUG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FLEX_HOME", str(tmp_path / "home"))
    return tmp_path


def _folder(tmp_path: Path, config: dict[str, Any], name: str = "app") -> Path:
    folder = tmp_path / name
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps(config))
    (folder / ".devcontainer" / "Dockerfile").write_text("FROM scratch\n")
    return folder


def _env(want: Desired, **change: Any) -> Environment:
    """The environment a full `up` of ``want`` made, Ready; ``change``: dotted wire paths set to new values."""
    wire: dict[str, Any] = {
        "metadata": {"id": "env_1", "name": want.name, "owner": "admin", "generation": 2, "resourceVersion": 9,
                     "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"},
        "spec": json.loads(json.dumps(want.spec)),
        "status": {"phase": "running", "observedGeneration": 2, "conditions": [
            {"type": "ContainerReady", "status": "True", "message": "container flex-env_1 (a827627a0e2b)"},
            {"type": "Ready", "status": "True", "reason": "Ready"}]},
    }
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = wire
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return Environment.model_validate(wire)


@pytest.mark.parametrize("change", [
    {},
    {"spec.configHash": "sha256:" + "0" * 64},
    {"spec.configHash": None},
    {"spec.docker": True},
    {"spec.desiredPhase": "stopped"},
    {"spec.devcontainer": {"path": ".devcontainer/other/devcontainer.json"}},
    {"spec.source": {"path": "/elsewhere"}},
    {"metadata.deletionTimestamp": "2026-01-01T00:00:01Z"},
    {"metadata.generation": 3},
    {"status.phase": "starting"},
    {"status.conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]},
    {"status.conditions": []},
    {"spec.idleTimeout": 60, "spec.rebuild": 2, "spec.env": {"A": "1"}},  # keys `up` does not own
])
def test_it_answers_exactly_when_the_full_command_would_patch_nothing_and_find_it_ready(
        tmp_path: Path, change: dict[str, Any]) -> None:
    want = desired(str(_folder(tmp_path, {"build": {"dockerfile": "Dockerfile"}})), None, None, remote=False)
    env = _env(want, **change)
    source = {k: v for k, v in env.spec.source.to_wire().items() if v is not None}
    full = source == want.spec["source"] and not env.metadata.deleting and not _patch(env, want.spec) \
        and is_ready(env)
    assert unchanged_and_ready(env.to_wire(), want.spec) is full
    assert full is (change == {} or "spec.idleTimeout" in change)


def test_a_folder_reads_as_the_full_command_reads_it_unless_its_config_reads_the_host_environment(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"build": {"dockerfile": "Dockerfile"}, "remoteUser": "dev",
                                "workspaceFolder": "/src/${localWorkspaceFolderBasename}"})
    lean = _read(str(folder))
    assert lean is not None and lean == desired(str(folder), None, None, remote=False)
    assert lean.config["workspaceFolder"] == "/src/app"
    # the Dockerfile is in the configHash: an edit of it is a change the server sees
    (folder / ".devcontainer" / "Dockerfile").write_text("FROM scratch\nRUN true\n")
    edited = _read(str(folder))
    assert edited is not None and edited.spec["configHash"] != lean.spec["configHash"]

    env_folder = _folder(tmp_path, {"image": "x", "containerEnv": {"WHO": "${localEnv:USER:nobody}"}}, "env-app")
    assert _read(str(env_folder)) is None  # not a function of the files: the full command reads it
    assert _read(str(tmp_path / "missing")) is None  # the full command says what is wrong
    assert _read("https://example.com/repo.git") is None


def test_anything_else_is_the_full_commands(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(clean_env, {"image": "x"})
    for argv in (["up", str(folder), "--name", "x"], ["up", "--debug", str(folder)], ["up", str(folder), "b"],
                 ["up", str(folder), "--json", "--json"], ["up", "--shell"], ["up", "--", str(folder)],
                 ["ls"]):
        assert fast_up(argv) is None, argv
    assert fast_up(["up", str(folder)]) is None  # no daemon: the full command starts it
    (clean_env / "home" / "daemon").mkdir(parents=True)
    (clean_env / "home" / "daemon" / "state.json").write_text(json.dumps(
        {"pid": 2**22 + 7, "socket": "x", "runnerId": "r", "startedAt": 1.0}))
    assert fast_up(["up", str(folder), "--json"]) is None  # its pid is gone
    monkeypatch.setenv("FLEX_DEBUG", "1")
    assert fast_up(["up", str(folder)]) is None
    monkeypatch.delenv("FLEX_DEBUG")
    monkeypatch.setenv("FLEX_URL", "http://127.0.0.1:1")
    assert fast_up(["up", str(folder)]) is None


def test_no_runtime_database_is_no_id(tmp_path: Path) -> None:
    assert recorded_container_id(tmp_path / "runtime.db", "flex-env_1") is None
    assert not (tmp_path / "runtime.db").exists()  # read-only: nothing created
