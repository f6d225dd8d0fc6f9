"""The quick schema check (flex/devcontainer/schema_check.py) says "valid" only where jsonschema finds no error:
over every configuration the schema tests use, each with every value in it replaced by values of other kinds,
random ones too; and a valid devcontainer.json is read without importing jsonschema at all."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flex.devcontainer.features.metadata import feature_schema
from flex.devcontainer.schema import load_schema
from flex.devcontainer.schema_check import conforms
from tests.devcontainer.test_schema import (
    COMPOSE_CONFIG,
    DOCKERFILE_CONFIG,
    IMAGE_CONFIG,
    LEGACY_DOCKERFILE_CONFIG,
    WRONG_TYPES,
)

CONFIGS = [IMAGE_CONFIG, DOCKERFILE_CONFIG, LEGACY_DOCKERFILE_CONFIG, COMPOSE_CONFIG, {"image": "x"}]
FEATURE: dict[str, Any] = {
    "id": "my-tool", "version": "1.2.3", "name": "My tool", "description": "a tool",
    "documentationURL": "https://example.com", "keywords": ["a"],
    "options": {"version": {"type": "string", "default": "latest", "proposals": ["latest", "1.0"]},
                "enable": {"type": "boolean", "default": True}},
    "containerEnv": {"PATH": "/opt/tool:${PATH}"}, "privileged": False, "init": True, "capAdd": ["SYS_PTRACE"],
    "securityOpt": ["seccomp=unconfined"], "entrypoint": "/usr/local/bin/start.sh",
    "mounts": [{"source": "v", "target": "/v", "type": "volume"}], "installsAfter": ["ghcr.io/x/y"],
    "dependsOn": {"ghcr.io/x/z:1": {}}, "customizations": {"vscode": {}},
    "onCreateCommand": "echo hi", "postStartCommand": ["echo", "hi"],
}
_VALIDATORS = {id(s): jsonschema.Draft202012Validator(s) for s in (load_schema(), feature_schema())}
ODD: list[Any] = [None, True, False, 0, 1, -1, 1.0, 1.5, 70000, "", "x", "8000:8010", "1gb", "/abs", [], [1], ["x"],
                  [None], {}, {"a": 1}, {"a": "b"}, {"type": "bind", "target": "/t"}]


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(value)
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = new
    return out


def _agree(instance: Any, schema: dict[str, Any]) -> None:
    """The same answer: never "valid" where jsonschema finds an error, and (flex's schemas use only keywords
    the check knows) never a needless jsonschema import for a valid one."""
    errors = list(_VALIDATORS[id(schema)].iter_errors(instance))
    assert conforms(instance, schema) == (not errors), (json.dumps(instance)[:300], [e.message for e in errors])


@pytest.mark.parametrize("config", CONFIGS, ids=["image", "dockerfile", "legacy", "compose", "minimal"])
def test_every_value_replaced_by_every_other_kind(config: dict[str, Any]) -> None:
    schema = load_schema()
    assert conforms(config, schema)  # the valid ones take the quick path
    for path in _paths(config):
        for odd in ODD:
            _agree(_replaced(config, path, odd), schema)
    for key in config:  # and each property left out, or added elsewhere
        _agree({k: v for k, v in config.items() if k != key}, schema)
    for prop, value in WRONG_TYPES:
        _agree({**config, prop: value}, schema)


def test_feature_metadata_every_value_replaced() -> None:
    schema = feature_schema()
    assert conforms(FEATURE, schema)
    for path in _paths(FEATURE):
        for odd in ODD:
            _agree(_replaced(FEATURE, path, odd), schema)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2, 70000) | st.floats(allow_nan=False) |
                     st.sampled_from(["", "x", "a:b", "1gb", "8080:80", "/p", "bind", "none", "image"]) | st.text(),
                     lambda inner: st.lists(inner, max_size=3) |
                     st.dictionaries(st.sampled_from(["image", "type", "target", "source", "a", "3000", "cpus",
                                                      "dockerfile", "context", "label", "x"]) | st.text(),
                                     inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*CONFIGS, FEATURE]), st.data())
def test_random_values_anywhere(config: dict[str, Any], data: st.DataObject) -> None:
    schema = feature_schema() if config is FEATURE else load_schema()
    path = data.draw(st.sampled_from(list(_paths(config))))
    _agree(_replaced(config, path, data.draw(_json)), schema)


def test_what_it_does_not_know_is_left_to_jsonschema() -> None:
    assert not conforms(1, {"unevaluatedProperties": False})
    assert not conforms({}, {"$ref": "https://example.com/other.json"})
    assert not conforms([1], {"prefixItems": [{}], "items": False})


def test_json_equality_and_numbers() -> None:
    assert not conforms(True, {"enum": [1]}) and not conforms(1, {"enum": [True]})
    assert conforms(1.0, {"type": "integer"}) and not conforms(True, {"type": "integer"})
    assert not conforms(True, {"type": "number"}) and conforms([1.0], {"const": [1]})


def test_a_valid_config_is_read_without_jsonschema(tmp_path: Any) -> None:
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text(json.dumps(IMAGE_CONFIG))
    code = ("import sys; from flex.cli.up_source import desired; desired(sys.argv[1], None, None, remote=False); "
            "print('jsonschema' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MY_VARIABLE": "v"})
    assert r.returncode == 0 and r.stdout == "False\n", r.stderr
