"""Host-phase variable substitution, variable by variable, with the reference CLI's edge cases."""

from __future__ import annotations

from typing import Any

import pytest

from flex.devcontainer.config import devcontainer_id
from flex.devcontainer.substitute import HostContext, substitute, substitute_string
from flex.errors import InvalidConfiguration

CTX = HostContext(env={"HOME": "/home/me", "EMPTY": "", "WITH_VAR": "${localEnv:HOME}"},
                  local_workspace_folder="/src/my-project", container_workspace_folder="/workspaces/my-project",
                  devcontainer_id="0abc", config_file="/src/my-project/.devcontainer/devcontainer.json")


@pytest.mark.parametrize(("text", "expected"), [
    ("${localEnv:HOME}", "/home/me"),
    ("${env:HOME}", "/home/me"),  # the older name the reference still accepts
    ("${localEnv:NOPE}", ""),
    ("${localEnv:NOPE:fallback}", "fallback"),
    ("${localEnv:NOPE:}", ""),
    ("${localEnv:NOPE:a:b}", "a"),  # the reference keeps only the text up to the next ':'
    ("${localEnv:EMPTY:fallback}", ""),  # set but empty is set
    ("${localEnv:HOME:fallback}", "/home/me"),
    ("${localWorkspaceFolder}", "/src/my-project"),
    ("${localWorkspaceFolderBasename}", "my-project"),
    ("${containerWorkspaceFolder}", "/workspaces/my-project"),
    ("${containerWorkspaceFolderBasename}", "my-project"),
    ("${devcontainerId}", "0abc"),
    ("${containerEnv:PATH}", "${containerEnv:PATH}"),  # container time
    ("${containerEnv:PATH:/usr/bin}", "${containerEnv:PATH:/usr/bin}"),
    ("${unknownVariable}", "${unknownVariable}"),
    ("${}", "${}"),
    ("$HOME and ${HOME}", "$HOME and ${HOME}"),
    ("a${localEnv:HOME}b${localWorkspaceFolderBasename}c", "a/home/meb" + "my-projectc"),
    ("${localEnv:WITH_VAR}", "${localEnv:HOME}"),  # a replacement is not scanned again
    ("${localEnv:HOME", "${localEnv:HOME"),
])
def test_variables(text: str, expected: str) -> None:
    assert substitute_string(text, CTX) == expected


def test_unknown_context_leaves_variables_as_written() -> None:
    ctx = HostContext(env={})
    for name in ("localWorkspaceFolder", "localWorkspaceFolderBasename", "containerWorkspaceFolder",
                 "containerWorkspaceFolderBasename", "devcontainerId"):
        assert substitute_string(f"${{{name}}}", ctx) == f"${{{name}}}"


def test_a_missing_variable_name_is_an_invalid_configuration() -> None:
    with pytest.raises(InvalidConfiguration) as info:
        substitute({"containerEnv": {"A": "${localEnv}"}}, CTX)
    err = info.value
    assert err.message == "'${localEnv}' can not be resolved because no environment variable name is given"
    assert err.details["pointer"] == "/containerEnv/A"


def test_every_string_value_is_substituted_keys_and_other_types_are_kept() -> None:
    config: dict[str, Any] = {
        "${localEnv:HOME}": "${localEnv:HOME}",
        "list": ["${localWorkspaceFolderBasename}", 1, True, None, {"x": "${devcontainerId}"}],
        "n": 3.5,
    }
    assert substitute(config, CTX) == {
        "${localEnv:HOME}": "/home/me",
        "list": ["my-project", 1, True, None, {"x": "0abc"}],
        "n": 3.5,
    }
    assert config["list"][0] == "${localWorkspaceFolderBasename}"  # the input is not changed


def test_devcontainer_id_is_the_reference_clis() -> None:
    # Known answer, produced by @devcontainers/cli 0.89.0 (read-configuration with an existing container
    # labelled with this folder and config file); tests/devcontainer/test_oracle.py checks it live.
    assert devcontainer_id("/tmp/oratest/proj", "/tmp/oratest/proj/.devcontainer/devcontainer.json") == \
        "11ipa4oabaoh0nbkvj92ihkh99770hodjva0i65rq3dsfgdhs1t0"


def test_devcontainer_id_is_stable_and_differs_per_folder_and_file() -> None:
    a = devcontainer_id("/w/a", "/w/a/.devcontainer/devcontainer.json")
    assert a == devcontainer_id("/w/a", "/w/a/.devcontainer/devcontainer.json")
    assert len(a) == 52 and set(a) <= set("0123456789abcdefghijklmnopqrstuv")
    assert a != devcontainer_id("/w/b", "/w/a/.devcontainer/devcontainer.json")
    assert a != devcontainer_id("/w/a", "/w/a/.devcontainer.json")
