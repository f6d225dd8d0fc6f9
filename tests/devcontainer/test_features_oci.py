"""OCI features published to the real docker-registry: fetched through the runtime's registry client,
cached by digest (offline once fetched), pinned by devcontainer-lock.json, dependency chains across
registries' repositories, and the errors of a feature that cannot be fetched or is not a feature."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.devcontainer.config import read_config
from flex.devcontainer.features.order import ordered_features
from flex.devcontainer.features.reference import parse_reference
from flex.errors import InvalidConfiguration, NotFound, Unavailable
from flex.runner.build.features import resolve_features, write_lockfile
from flex.runner.build.fetch import FeatureFetcher
from tests.devcontainer.features_helpers import write_feature
from tests.devcontainer.oci_features import publish_feature
from tests.runtime.images.conftest import RegistryServer, start_registry, stop


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop(reg.proc)


@pytest.fixture(scope="module")
def published(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    src = tmp_path_factory.mktemp("features")
    write_feature(src / "base", {"id": "base", "version": "1.0.0", "options": {
        "level": {"type": "string", "default": "low"}}})
    write_feature(src / "app", {"id": "app", "version": "2.1.0", "dependsOn": {
        f"{registry.host}/flex/features/base:1": {"level": "high"}}, "containerEnv": {"APP": "1"}})
    digests = {
        "base": publish_feature(registry.host, "flex/features/base", ["1", "1.0.0", "latest"], src / "base"),
        "app": publish_feature(registry.host, "flex/features/app", ["2"], src / "app"),
    }
    return digests


def test_dependency_chain_from_the_registry(registry: RegistryServer, published: dict[str, str],
                                            tmp_path: Path) -> None:
    config = {"features": {f"{registry.host}/flex/features/app:2": {}}}
    with FeatureFetcher(tmp_path / "cache") as fetch:
        ordered = ordered_features(config, str(tmp_path), fetch)
    assert [f.ref.id for f in ordered] == ["base", "app"]
    assert ordered[0].options == {"level": "high"} and ordered[0].resolved.digest == published["base"]
    assert ordered[1].metadata["containerEnv"] == {"APP": "1"}
    assert (Path(ordered[1].resolved.folder) / "install.sh").is_file()


def test_cached_features_work_offline(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    src = tmp_path / "src"
    write_feature(src / "solo", {"id": "solo", "version": "1.0.0"})
    digest = publish_feature(reg.host, "o/solo", ["1"], src / "solo")
    ref = parse_reference(f"{reg.host}/o/solo:1", "/")
    with FeatureFetcher(tmp_path / "cache") as fetch:
        first = fetch(ref)
    stop(reg.proc)
    lines: list[str] = []
    with FeatureFetcher(tmp_path / "cache", progress=lines.append) as fetch:
        again = fetch(ref)  # the registry is gone: the tag's last resolution is used
        pinned = fetch(parse_reference(f"{reg.host}/o/solo@{digest}", "/"))  # by digest: no network at all
    assert again.digest == first.digest == pinned.digest == digest and again.folder == first.folder
    assert any("unreachable" in line for line in lines)
    with FeatureFetcher(tmp_path / "other-cache") as fetch, pytest.raises(Unavailable) as err:
        fetch(ref)
    assert reg.host in err.value.message


def test_lockfile_written_and_pinning(registry: RegistryServer, published: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True)
    app = f"{registry.host}/flex/features/app:2"
    (ws / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"image": "x", "features": {app: {}}}))
    resolved = read_config(ws, env=dict(os.environ))
    ordered = resolve_features(resolved, cache_dir=tmp_path / "cache")
    write_lockfile(resolved, ordered)
    lock = json.loads((ws / ".devcontainer" / "devcontainer-lock.json").read_text())
    base = f"{registry.host}/flex/features/base:1"
    assert lock == {"features": {
        app: {"version": "2.1.0", "resolved": f"{registry.host}/flex/features/app@{published['app']}",
              "integrity": published["app"], "dependsOn": [base]},
        base: {"version": "1.0.0", "resolved": f"{registry.host}/flex/features/base@{published['base']}",
               "integrity": published["base"]}}}
    # the tag moves on: the lockfile keeps the build on the locked digest
    src = tmp_path / "src"
    write_feature(src / "app", {"id": "app", "version": "2.2.0"})
    publish_feature(registry.host, "flex/features/app", ["2"], src / "app")
    again = resolve_features(resolved, cache_dir=tmp_path / "cache")
    assert [f.metadata["version"] for f in again] == ["1.0.0", "2.1.0"]


def test_unfetchable_and_malformed_features(registry: RegistryServer, tmp_path: Path) -> None:
    with FeatureFetcher(tmp_path / "cache") as fetch:
        with pytest.raises(NotFound) as nf:
            fetch(parse_reference(f"{registry.host}/flex/features/nope:1", "/"))
        assert f"feature '{registry.host}/flex/features/nope:1'" in nf.value.message
    src = tmp_path / "src"
    write_feature(src / "broken", {"id": "broken", "version": "1", "options": {"x": {"type": "int"}}})
    publish_feature(registry.host, "flex/features/broken", ["1"], src / "broken")
    with FeatureFetcher(tmp_path / "cache") as fetch, pytest.raises(InvalidConfiguration) as bad:
        fetch(parse_reference(f"{registry.host}/flex/features/broken:1", "/"))
    assert "flex/features/broken:1: devcontainer-feature.json" in bad.value.message
    assert "/options/x/type" in bad.value.message


def test_frozen_lockfile_fails_before_building_and_leaves_the_lockfile_as_it_was(
        registry: RegistryServer, published: dict[str, str], tmp_path: Path) -> None:
    """`flex build --frozen-lockfile` and `flex up --frozen-lockfile`, as the user runs them: a lockfile that is
    missing or would change is exit 1 naming the feature, before any build or environment; one that matches
    passes the check."""
    import subprocess
    import sys

    from flex.runner.build.features import check_frozen_lockfile
    from tests.conftest import REPO

    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True)
    app, base = f"{registry.host}/flex/features/app:2", f"{registry.host}/flex/features/base:1.0.0"
    cfg = ws / ".devcontainer" / "devcontainer.json"
    cfg.write_text(json.dumps({"image": "flextest/never-pulled:1", "features": {app: {}}}))
    lockfile = ws / ".devcontainer" / "devcontainer-lock.json"
    env = {**os.environ, "FLEX_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "PYTHONPATH": str(REPO)}
    env.pop("FLEX_URL", None)

    def flex(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flex", *args], env=env, capture_output=True, text=True,
                              cwd="/", timeout=120)

    r = flex("build", "--workspace-folder", str(ws), "--frozen-lockfile", "--json")
    assert r.returncode == 1 and "devcontainer-lock.json does not exist (--frozen-lockfile)" in r.stderr, r.stderr
    assert json.loads(r.stdout)["outcome"] == "error" and "hint: " in r.stderr
    assert not lockfile.exists() and "never-pulled" not in r.stderr

    resolved = read_config(ws, env=dict(os.environ))
    write_lockfile(resolved, resolve_features(resolved, cache_dir=tmp_path / "cache"))
    locked = lockfile.read_text()
    check_frozen_lockfile(resolved, resolve_features(resolved, cache_dir=tmp_path / "cache"))  # matches: passes

    cfg.write_text(json.dumps({"image": "flextest/never-pulled:1", "features": {app: {}, base: {}}}))
    for verb in (["build", "--workspace-folder", str(ws)], ["up", str(ws)]):
        r = flex(*verb, "--frozen-lockfile")
        assert r.returncode == 1, r.stderr
        assert f"does not match the configuration's features (--frozen-lockfile): {base} would change" in r.stderr
        assert lockfile.read_text() == locked
    assert not (tmp_path / "home" / "daemon").exists()  # `up` stopped before starting the daemon
