"""Feature resolution against the reference CLI (`devcontainer read-configuration
--include-features-configuration`): the same featureSets in the same install order, with the same
consecutive ids, values and metadata, for local features with dependsOn chains, installsAfter and
overrideFeatureInstallOrder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_flex
from tests.devcontainer.features_helpers import write_feature
from tests.devcontainer.test_oracle import reference

pytestmark = pytest.mark.oracle

METAS: dict[str, dict[str, Any]] = {
    "tiger": {"installsAfter": ["./lion"], "containerEnv": {"T": "1"}},
    "panda": {"dependsOn": {"./bamboo": {"size": "big"}}, "capAdd": ["SYS_PTRACE"]},
    "bamboo": {"options": {"size": {"type": "string", "enum": ["big", "small"], "default": "small"}},
               "dependsOn": {"./soil": {}}},
    "soil": {"name": "Soil", "init": True},
    "lion": {"postCreateCommand": "echo lion"},
    "zebra": {},
}


def _workspace(tmp_path: Path, features: dict[str, Any], override: list[str] | None = None) -> Path:
    ws = tmp_path / "ws"
    dc = ws / ".devcontainer"
    for name, meta in METAS.items():
        write_feature(dc / name, {"id": name, "version": "1.0.0", **meta})
    config: dict[str, Any] = {"image": "debian:bookworm", "features": features}
    if override is not None:
        config["overrideFeatureInstallOrder"] = override
    (dc / "devcontainer.json").write_text(json.dumps(config))
    return ws


def _comparable(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in sets:
        f = dict(s["features"][0])
        f.pop("cachePath")
        out.append({"source": s["sourceInformation"], "feature": f})
    return out


@pytest.mark.parametrize("override", [None, ["./zebra", "./tiger"]])
def test_feature_sets_match_the_reference(tmp_path: Path, override: list[str] | None) -> None:
    ws = _workspace(tmp_path, {"./tiger": {}, "./panda": {}, "./lion": {}, "./zebra": True}, override)
    _, ref, _ = reference(ws, "--include-features-configuration")
    assert ref is not None
    proc = run_flex("config", "read", "--include-features-configuration", "--json", "--workspace-folder", str(ws),
                    env={**os.environ, "FLEX_HOME": str(tmp_path / "home")})
    assert proc.code == 0, proc.stderr
    mine = json.loads(proc.stdout)["featuresConfiguration"]["featureSets"]
    assert [s["sourceInformation"]["userFeatureId"] for s in mine] == \
        [s["sourceInformation"]["userFeatureId"] for s in ref["featuresConfiguration"]["featureSets"]]
    assert _comparable(mine) == _comparable(ref["featuresConfiguration"]["featureSets"])


def test_cycle_is_refused_like_the_reference(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    dc = ws / ".devcontainer"
    write_feature(dc / "a", {"id": "a", "version": "1", "dependsOn": {"./b": {}}})
    write_feature(dc / "b", {"id": "b", "version": "1", "dependsOn": {"./a": {}}})
    (dc / "devcontainer.json").write_text(json.dumps({"image": "x", "features": {"./a": {}}}))
    code, _, _ = reference(ws, "--include-features-configuration", ok=False)
    assert code != 0
    proc = run_flex("config", "read", "--include-features-configuration", "--workspace-folder", str(ws),
                    env={**os.environ, "FLEX_HOME": str(tmp_path / "home")})
    assert proc.code == 7 and "cycle: ./a, ./b" in proc.stderr and "Traceback" not in proc.stderr
