"""Dev Container Features, the pure parts: references, devcontainer-feature.json and its schema, options
and install.sh's env, install order, the metadata label, the lockfile and the generated Dockerfile.
Local features are real folders; the fetcher for them is the one the runner uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flex.devcontainer.features.dockerfile import plan_build
from flex.devcontainer.features.lockfile import lockfile_path, lockfile_text, parse_lockfile
from flex.devcontainer.features.merge import (
    label_instruction,
    label_value,
    merge_configuration,
    metadata_entries,
    parse_label,
)
from flex.devcontainer.features.metadata import parse_feature_json
from flex.devcontainer.features.options import options_env, resolve_options, safe_id
from flex.devcontainer.features.order import Feature, Resolved, ordered_features
from flex.devcontainer.features.reference import FeatureRef, parse_reference
from flex.errors import InvalidConfiguration
from flex.runner.build.fetch import FeatureFetcher
from tests.devcontainer.features_helpers import write_feature


# -- references ---------------------------------------------------------------------------------------
def test_oci_references() -> None:
    r = parse_reference("ghcr.io/devcontainers/features/node:1", "/w/.devcontainer")
    assert (r.kind, r.registry, r.path, r.tag, r.digest, r.id) == \
        ("oci", "ghcr.io", "devcontainers/features/node", "1", None, "node")
    assert parse_reference("ghcr.io/Org/Feat", "/").tag is None and parse_reference("ghcr.io/Org/Feat", "/").path \
        == "org/feat"
    d = "sha256:" + "a" * 64
    r = parse_reference(f"localhost:5000/a/b@{d}", "/")
    assert (r.registry, r.path, r.digest, r.tag) == ("localhost:5000", "a/b", d, None)
    assert parse_reference("127.0.0.1:5000/f/x:2.1", "/").registry == "127.0.0.1:5000"


def test_local_and_tarball_references() -> None:
    r = parse_reference("./hello", "/w/.devcontainer")
    assert (r.kind, r.local_path, r.id) == ("file-path", "/w/.devcontainer/hello", "hello")
    assert parse_reference("../f/x", "/w/.devcontainer").local_path == "/w/f/x"
    r = parse_reference("https://example.com/r/devcontainer-feature-go.tgz", "/")
    assert (r.kind, r.id) == ("direct-tarball", "go")


@pytest.mark.parametrize(("ref", "words"), [
    ("node", "bare feature ids are deprecated"),
    ("owner/repo/feature", "GitHub-release"),
    ("/abs/feature", "absolute paths"),
    ("https://example.com/feature.tgz", "devcontainer-feature-<id>.tgz"),
    ("http://example.com/devcontainer-feature-x.tgz", "https"),
    ("ghcr.io/x/y@sha256:12", "not a sha256 digest"),
    ("ghcr.io/x/Y Z", "not a valid OCI repository path"),
])
def test_bad_references_name_the_feature(ref: str, words: str) -> None:
    with pytest.raises(InvalidConfiguration) as err:
        parse_reference(ref, "/w")
    assert f"feature {ref!r}" in err.value.message and words in err.value.message


# -- devcontainer-feature.json ------------------------------------------------------------------------
def test_feature_json_validated_with_file_and_field() -> None:
    good = parse_feature_json('{"id": "x", "version": "1.0.0", // comment\n "options": {}}', "f.json")
    assert good["id"] == "x"
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"id": "x",\n "version": "1",\n "options": {"o": {"type": "number"}}}', "f/x.json")
    assert err.value.message.startswith("f/x.json:3:") and "/options/o/type" in err.value.message
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"version": "1"}', "f.json")
    assert "missing property 'id'" in err.value.message
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"id": "../x", "version": "1"}', "f.json")
    assert "/id" in err.value.message
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"id": "x", "version": "1", "contanerEnv": {}}', "f.json")
    assert "unknown property 'contanerEnv'" in err.value.message
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"id": "x", "version": "1", "options": {"a": {"type": "boolean", "default": "yes"}}}',
                           "f.json")
    assert "/options/a/default" in err.value.message
    with pytest.raises(InvalidConfiguration) as err:
        parse_feature_json('{"id": "x", "version": ', "f.json")
    assert err.value.message.startswith("f.json:1:")


# -- options ------------------------------------------------------------------------------------------
def test_safe_id_vectors_from_the_reference() -> None:
    assert [safe_id(n) for n in ("option-name", "1name", "12345_option-name", "myOptionName", "a.b")] == \
        ["OPTION_NAME", "_NAME", "_OPTION_NAME", "MYOPTIONNAME", "A_B"]


FEATURE = {"id": "x", "version": "1", "options": {
    "version": {"type": "string", "default": "latest", "proposals": ["latest", "1.0"]},
    "flavour": {"type": "string", "enum": ["a", "b"], "default": "a"},
    "fast": {"type": "boolean", "default": False},
    "note": {"type": "string"}}}


def test_options_defaults_values_and_env() -> None:
    opts = resolve_options(FEATURE, {"flavour": "b", "fast": True, "note": "hi there"}, "x")
    assert opts == {"version": "latest", "flavour": "b", "fast": True, "note": "hi there"}
    assert options_env(opts) == 'VERSION="latest"\nFLAVOUR="b"\nFAST="true"\nNOTE="hi there"'
    assert resolve_options(FEATURE, "1.0", "x")["version"] == "1.0"  # a string means the version option
    assert resolve_options(FEATURE, True, "x") == {"version": "true", "flavour": "a", "fast": False}


@pytest.mark.parametrize(("value", "words"), [
    ({"flavor": "a"}, "not an option of this feature"),
    ({"flavour": "c"}, "is not one of 'a', 'b'"),
    ({"fast": "maybe"}, "expected true or false"),
    ({"note": ["x"]}, "expected a string"),
])
def test_bad_options_name_feature_and_option(value: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidConfiguration) as err:
        resolve_options(FEATURE, value, "ghcr.io/a/x:1")
    assert "feature 'ghcr.io/a/x:1': option" in err.value.message and words in err.value.message


# -- install order --------------------------------------------------------------------------------------
def _order(tmp_path: Path, features: dict[str, Any], metas: dict[str, dict[str, Any]],
           override: list[str] | None = None) -> list[str]:
    dc = tmp_path / ".devcontainer"
    for name, meta in metas.items():
        write_feature(dc / name, {"id": name, "version": "1.0.0", **meta})
    config: dict[str, Any] = {"features": features}
    if override:
        config["overrideFeatureInstallOrder"] = override
    with FeatureFetcher(tmp_path / "cache", workspace_folder=str(tmp_path)) as fetch:
        return [f.user_id for f in ordered_features(config, str(dc), fetch)]


def test_order_is_alphabetical_within_a_round(tmp_path: Path) -> None:
    assert _order(tmp_path, {"./tiger": {}, "./panda": {}}, {"tiger": {}, "panda": {}}) == ["./panda", "./tiger"]


def test_installs_after_and_override(tmp_path: Path) -> None:
    metas = {"a": {"installsAfter": ["./c"]}, "b": {}, "c": {}}
    assert _order(tmp_path, {"./a": {}, "./b": {}, "./c": {}}, metas) == ["./b", "./c", "./a"]
    # a soft dependency on a feature not in the config is dropped
    assert _order(tmp_path, {"./a": {}, "./b": {}}, metas) == ["./a", "./b"]
    # the override's first entry goes first; the rest follow the rounds
    assert _order(tmp_path, {"./a": {}, "./b": {}, "./c": {}}, metas, override=["./b", "./a"])[0] == "./b"
    assert _order(tmp_path, {"./a": {}, "./b": {}, "./c": {}}, {"a": {}, "b": {}, "c": {}},
                  override=["./c"]) == ["./c", "./a", "./b"]


def test_depends_on_is_fetched_recursively(tmp_path: Path) -> None:
    metas = {"app": {"dependsOn": {"./lib": {}}}, "lib": {"dependsOn": {"./base": {"flag": True}}},
             "base": {"options": {"flag": {"type": "boolean", "default": False}}}, "zzz": {}}
    assert _order(tmp_path, {"./app": {}, "./zzz": {}}, metas) == ["./base", "./zzz", "./lib", "./app"]


def test_cycle_names_its_members(tmp_path: Path) -> None:
    metas = {"a": {"dependsOn": {"./b": {}}}, "b": {"dependsOn": {"./a": {}}}, "c": {}}
    with pytest.raises(InvalidConfiguration) as err:
        _order(tmp_path, {"./a": {}, "./c": {}}, metas)
    assert "cycle" in err.value.message and "./a" in err.value.message and "./b" in err.value.message
    assert "./c" not in err.value.message


def test_local_feature_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    write_feature(tmp_path / "outside", {"id": "outside", "version": "1"})
    (tmp_path / "ws").mkdir()
    with FeatureFetcher(tmp_path / "cache", workspace_folder=str(tmp_path / "ws")) as fetch, \
            pytest.raises(InvalidConfiguration, match="outside the workspace"):
        ordered_features({"features": {"../outside": {}}}, str(tmp_path / "ws"), fetch)


def test_malformed_feature_json_names_file_and_field(tmp_path: Path) -> None:
    dc = tmp_path / ".devcontainer"
    write_feature(dc / "bad", {"id": "bad", "version": "1", "capAdd": "SYS_ADMIN"})
    with FeatureFetcher(tmp_path / "cache", workspace_folder=str(tmp_path)) as fetch, \
            pytest.raises(InvalidConfiguration) as err:
        ordered_features({"features": {"./bad": {}}}, str(dc), fetch)
    assert str(dc / "bad" / "devcontainer-feature.json") in err.value.message and "/capAdd" in err.value.message


# -- metadata ------------------------------------------------------------------------------------------
def test_label_format_and_merge() -> None:
    entries = metadata_entries(
        [{"id": "base", "remoteUser": "vscode"}],
        [("./a", {"id": "a", "init": True, "capAdd": ["SYS_PTRACE"], "postCreateCommand": "a",
                  "containerEnv": {"NOT": "carried"}, "mounts": [{"type": "volume", "source": "x", "target": "/m"}]}),
         ("./b", {"id": "b", "capAdd": ["SYS_PTRACE", "NET_ADMIN"], "privileged": True})],
        {"image": "x", "postCreateCommand": "cfg", "mounts": ["type=bind,source=/y,target=/m"], "containerEnv":
         {"A": "1"}, "remoteUser": "me", "name": "n"})
    assert entries[1] == {"id": "./a", "postCreateCommand": "a", "init": True, "capAdd": ["SYS_PTRACE"],
                          "mounts": [{"type": "volume", "source": "x", "target": "/m"}]}
    assert entries[3] == {"postCreateCommand": "cfg", "mounts": ["type=bind,source=/y,target=/m"],
                          "containerEnv": {"A": "1"}, "remoteUser": "me"}
    value = label_value(entries)
    assert value.startswith("[ {") and value.endswith("} ]") and json.loads(value) == entries
    assert parse_label(value) == entries and parse_label('{"a": 1}') == [{"a": 1}] and parse_label("x") == []
    line = label_instruction([{"c": 'a"b$c\\d'}])
    assert line == 'LABEL devcontainer.metadata="[ \\\n{\\"c\\":\\"a\\\\\\"b\\$c\\\\\\\\d\\"} \\\n]"'
    merged = merge_configuration({"image": "x", "postCreateCommand": "cfg"}, entries)
    assert merged["init"] is True and merged["privileged"] is True
    assert merged["capAdd"] == ["SYS_PTRACE", "NET_ADMIN"]
    assert merged["postCreateCommands"] == ["a", "cfg"] and "postCreateCommand" not in merged
    assert merged["mounts"] == ["type=bind,source=/y,target=/m"]  # same target: the last one wins
    assert merged["remoteUser"] == "me" and merged["containerEnv"] == {"A": "1"}


# -- lockfile --------------------------------------------------------------------------------------------
def test_lockfile_format() -> None:
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64

    def node(uid: str, digest: str, meta: dict[str, Any]) -> Feature:
        return Feature(parse_reference(uid, "/"), {}, Resolved({"id": "x", **meta}, digest, "/tmp"))

    text = lockfile_text([node("ghcr.io/o/z:1", d1, {"version": "1.2.0", "dependsOn": {"ghcr.io/o/a:1": {}}}),
                          node("ghcr.io/o/a:1", d2, {"version": "1.0.0"}),
                          node("./local", d2, {"version": "1"})])
    assert text == json.dumps({"features": {
        "ghcr.io/o/a:1": {"version": "1.0.0", "resolved": f"ghcr.io/o/a@{d2}", "integrity": d2},
        "ghcr.io/o/z:1": {"version": "1.2.0", "resolved": f"ghcr.io/o/z@{d1}", "integrity": d1,
                          "dependsOn": ["ghcr.io/o/a:1"]}}}, indent=2) + "\n"
    assert parse_lockfile(text, "l")["features"]["ghcr.io/o/a:1"]["integrity"] == d2
    assert parse_lockfile("", "l") == {"features": {}}
    assert lockfile_path("/w/.devcontainer/devcontainer.json") == "/w/.devcontainer/devcontainer-lock.json"
    assert lockfile_path("/w/.devcontainer.json") == "/w/.devcontainer-lock.json"
    with pytest.raises(InvalidConfiguration, match="not valid JSON"):
        parse_lockfile("{", "/w/devcontainer-lock.json")


# -- the generated Dockerfile --------------------------------------------------------------------------
def test_generated_dockerfile_matches_the_reference_shape(tmp_path: Path) -> None:
    dc = tmp_path / ".devcontainer"
    write_feature(dc / "color", {"id": "color", "version": "1", "containerEnv": {"COLOR": 'r"e\\d'},
                                 "options": {"favorite": {"type": "string", "default": "red"}}})
    with FeatureFetcher(tmp_path / "cache", workspace_folder=str(tmp_path)) as fetch:
        ordered = ordered_features({"features": {"./color": {"favorite": "blue"}}}, str(dc), fetch)
    build = plan_build(ordered, base_image="base:1", image_user="vscode", container_user="vscode",
                       remote_user="me", metadata_entries=[{"id": "./color"}], config_container_env={"X": "$y"})
    text = build.dockerfile
    assert 'ENV COLOR="r\\"e\\\\d"\nRUN --mount=type=bind,source=./color_0,target=/tmp/build-features-src/color_0' \
        in text
    assert " && ./devcontainer-features-install.sh \\\n && rm -rf /tmp/dev-container-features/color_0\n" in text
    assert text.index("USER $_DEV_CONTAINERS_IMAGE_USER") < text.index("LABEL devcontainer.metadata=") < \
        text.index('ENV X="\\$y"')
    assert build.files["color_0/devcontainer-features.env"] == b'FAVORITE="blue"'
    assert build.files["devcontainer-features.builtin.env"] == b"_CONTAINER_USER=vscode\n_REMOTE_USER=me\n"
    assert b"./install.sh" in build.files["color_0/devcontainer-features-install.sh"]
    assert build.folders == {"color_0": str(dc / "color")}
    assert build.build_args == {"_DEV_CONTAINERS_BASE_IMAGE": "base:1", "_DEV_CONTAINERS_IMAGE_USER": "vscode"}
    assert isinstance(ordered[0].ref, FeatureRef)


def test_config_without_image_is_read_with_a_warning(tmp_path: Path) -> None:
    import os

    from tests.conftest import run_flex

    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True)
    (ws / ".devcontainer" / "devcontainer.json").write_text('{"name": "attach only", "remoteUser": "me"}')
    proc = run_flex("config", "read", "--json", "--workspace-folder", str(ws), env=dict(os.environ))
    assert proc.code == 0 and json.loads(proc.stdout)["configuration"]["name"] == "attach only"
    assert "warning:" in proc.stderr and "no image, build.dockerfile or dockerComposeFile" in proc.stderr
    from flex.devcontainer.config import parse_config

    with pytest.raises(InvalidConfiguration, match="expected one of image, build"):
        parse_config('{"name": "attach only"}')
