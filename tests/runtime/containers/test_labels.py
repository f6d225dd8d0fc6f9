"""Container labels as a user (and the runner) meets them: `run --label`, `ps --filter label=...`, inspect."""

from __future__ import annotations

import json

import pytest

from tests.runtime.containers.conftest import Mode

pytestmark = pytest.mark.userns


def test_labels_are_kept_shown_and_filtered(mode: Mode, image: str) -> None:
    mode.ok("create", "--name", "lab-a", "--label", "flex.dev/environment=env_a", "-l", "team=x", image, "true")
    mode.ok("run", "-d", "--name", "lab-b", "--label", "flex.dev/environment=env_b", image, "sleep", "30")
    info = json.loads(mode.ok("inspect", "lab-a"))
    assert info["labels"] == {"flex.dev/environment": "env_a", "team": "x"}
    every = {c["name"]: c["labels"] for c in json.loads(mode.ok("ps", "-a", "--json"))}
    assert every == {"lab-a": {"flex.dev/environment": "env_a", "team": "x"},
                     "lab-b": {"flex.dev/environment": "env_b"}}
    only_a = json.loads(mode.ok("ps", "-a", "--json", "--filter", "label=flex.dev/environment=env_a"))
    assert [c["name"] for c in only_a] == ["lab-a"]
    keyed = mode.ok("ps", "-a", "-q", "--filter", "label=flex.dev/environment")
    assert len(keyed.split()) == 2
    both = mode.ok("ps", "-a", "-q", "--filter", "label=flex.dev/environment=env_a", "--filter", "label=team=y")
    assert both == ""
    running = json.loads(mode.ok("ps", "--json", "--filter", "label=flex.dev/environment=env_b"))
    assert [c["name"] for c in running] == ["lab-b"]


def test_bad_labels_and_filters_are_one_line(mode: Mode, image: str) -> None:
    r = mode.run("run", "--rm", "--label", "=v", image, "true")
    assert r.code == 7 and r.stderr.startswith("error: --label") and "Traceback" not in r.stderr
    r = mode.run("ps", "--filter", "name=x")
    assert r.code == 2 and "only label=" in r.stderr and "Traceback" not in r.stderr
