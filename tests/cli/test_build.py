"""`flex build` as a user runs it: the JSON outcome objects of `devcontainer build`, and the refusals that
need no builder (a config that names no image, a feature that cannot be read)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import run_flex
from tests.devcontainer.features_helpers import write_feature


def _ws(tmp_path: Path, config: dict[str, object]) -> Path:
    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True, exist_ok=True)
    (ws / ".devcontainer" / "devcontainer.json").write_text(json.dumps(config))
    return ws


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FLEX_HOME": str(tmp_path / "home")}


def test_config_without_image_is_refused(tmp_path: Path) -> None:
    ws = _ws(tmp_path, {"name": "attach only"})
    proc = run_flex("build", "--workspace-folder", str(ws), "--json", env=_env(tmp_path))
    assert proc.code == 7
    out = json.loads(proc.stdout)
    assert out["outcome"] == "error" and out["description"] == "An error occurred building the container."
    assert "expected one of image, build (with dockerfile) or dockerComposeFile" in out["message"]
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr


def test_malformed_feature_is_refused_before_building(tmp_path: Path) -> None:
    ws = _ws(tmp_path, {"image": "debian:bookworm", "features": {"./bad": {}}})
    write_feature(ws / ".devcontainer" / "bad", {"id": "bad", "version": "1", "init": "yes"})
    proc = run_flex("build", "--workspace-folder", str(ws), env=_env(tmp_path))
    assert proc.code == 7 and "Traceback" not in proc.stderr
    assert "bad/devcontainer-feature.json" in proc.stderr and "/init" in proc.stderr


def test_push_needs_an_image_name(tmp_path: Path) -> None:
    ws = _ws(tmp_path, {"image": "debian:bookworm"})
    proc = run_flex("build", "--workspace-folder", str(ws), "--push", "--json", env=_env(tmp_path))
    assert proc.code == 2 and json.loads(proc.stdout)["outcome"] == "error"
