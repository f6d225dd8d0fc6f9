"""flex's devcontainer.json schema: accepts every property of the spec in each of its forms, rejects wrong
types, unknown lifecycle forms, malformed ports and mixes the spec's own schema forbids — with one message
naming the file, the JSON pointer, the line and column, and what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flex.devcontainer import schema
from flex.devcontainer.jsonc import parse
from flex.errors import InvalidConfiguration

REPO = Path(__file__).resolve().parents[2]


def check(config: Any, text: str | None = None) -> None:
    text = json.dumps(config, indent=2) if text is None else text
    doc = parse(text)
    schema.validate(doc.value, doc, "devcontainer.json")


def error(config: Any, text: str | None = None) -> InvalidConfiguration:
    with pytest.raises(InvalidConfiguration) as info:
        check(config, text)
    return info.value


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(schema.load_schema())


def test_the_published_schema_is_the_shipped_one() -> None:
    published = REPO / "devcontainer-schemas" / "devcontainer.schema.json"
    assert published.read_text() == schema.schema_text()


# Full configurations in the shapes the spec documents (containers.dev json_reference), every property used.
IMAGE_CONFIG: dict[str, Any] = {
    "$schema": "https://raw.githubusercontent.com/devcontainers/spec/main/schemas/devContainer.schema.json",
    "name": "My Project",
    "image": "mcr.microsoft.com/devcontainers/typescript-node:1-20-bullseye",
    "features": {
        "ghcr.io/devcontainers/features/github-cli:1": {"version": "latest"},
        "ghcr.io/devcontainers/features/docker-in-docker:2": {"moby": True, "dockerDashComposeVersion": "v2"},
        "ghcr.io/devcontainers/features/node": "lts",
        "./local-feature": {},
    },
    "overrideFeatureInstallOrder": ["ghcr.io/devcontainers/features/github-cli"],
    "forwardPorts": [3000, "db:5432", 0, 65535],
    "portsAttributes": {
        "3000": {"label": "Application", "onAutoForward": "openBrowserOnce", "protocol": "https"},
        "40000-55000": {"onAutoForward": "ignore"},
        ".+\\/server.js": {"onAutoForward": "openPreview", "elevateIfNeeded": True, "requireLocalPort": False},
    },
    "otherPortsAttributes": {"onAutoForward": "silent"},
    "appPort": [3000, "8000:8010", "127.0.0.1:9000:9000", "127.0.0.1::80", "5000-5010:5000-5010/udp"],
    "containerEnv": {"MY_VARIABLE": "${localEnv:MY_VARIABLE}"},
    "remoteEnv": {"PATH": "${containerEnv:PATH}:/some/other/path", "UNSET_ME": None},
    "containerUser": "root",
    "remoteUser": "node",
    "updateRemoteUserUID": True,
    "userEnvProbe": "loginInteractiveShell",
    "mounts": [
        "source=${localEnv:HOME}/.ssh,target=/home/node/.ssh,type=bind,consistency=cached",
        {"source": "dind-var-lib-docker", "target": "/var/lib/docker", "type": "volume"},
        {"type": "bind", "target": "/x"},
    ],
    "workspaceFolder": "/workspaces/${localWorkspaceFolderBasename}",
    "workspaceMount": "source=${localWorkspaceFolder},target=/workspaces/x,type=bind",
    "runArgs": ["--device-cgroup-rule=c 188:* rmw"],
    "privileged": False,
    "capAdd": ["SYS_PTRACE"],
    "securityOpt": ["seccomp=unconfined"],
    "init": True,
    "overrideCommand": True,
    "shutdownAction": "stopContainer",
    "initializeCommand": "echo host",
    "onCreateCommand": ["npm", "ci"],
    "updateContentCommand": {"deps": "npm install", "build": ["npm", "run", "build"]},
    "postCreateCommand": "npm test",
    "postStartCommand": {},
    "postAttachCommand": {"server": "npm start"},
    "waitFor": "onCreateCommand",
    "hostRequirements": {"cpus": 2, "memory": "4gb", "storage": "32gb", "gpu": "optional"},
    "customizations": {"vscode": {"extensions": ["dbaeumer.vscode-eslint"], "settings": {}}, "codespaces": {}},
    "secrets": {
        "CHAT_TOKEN": {"description": "a token", "documentationUrl": "https://example.com/token"},
        "_OTHER": {},
    },
}

DOCKERFILE_CONFIG: dict[str, Any] = {
    "name": "built",
    "build": {
        "dockerfile": "Dockerfile",
        "context": "..",
        "target": "dev",
        "args": {"VARIANT": "3.12"},
        "cacheFrom": ["ghcr.io/me/cache"],
        "options": ["--add-host=host.docker.internal:host-gateway"],
    },
    "runArgs": ["--cap-add=SYS_PTRACE"],
    "hostRequirements": {"gpu": {"cores": 1000, "memory": "8gb"}},
}

LEGACY_DOCKERFILE_CONFIG: dict[str, Any] = {
    "dockerFile": "Dockerfile", "context": "..", "build": {"args": {"A": "b"}},
    "extensions": ["ms-python.python"], "settings": {"a": 1}, "devPort": 8000,
}

COMPOSE_CONFIG: dict[str, Any] = {
    "name": "compose",
    "dockerComposeFile": ["../docker-compose.yml", "docker-compose.extend.yml"],
    "service": "app",
    "runServices": ["app", "db"],
    "workspaceFolder": "/workspaces/${localWorkspaceFolderBasename}",
    "shutdownAction": "stopCompose",
    "overrideCommand": False,
    "features": {},
    "mounts": [],
    "postCreateCommand": "pip install -r requirements.txt",
}


@pytest.mark.parametrize("config", [IMAGE_CONFIG, DOCKERFILE_CONFIG, LEGACY_DOCKERFILE_CONFIG, COMPOSE_CONFIG,
                                    {"image": "debian"}, {"build": {"dockerfile": "Dockerfile"}},
                                    {"dockerComposeFile": "compose.yml", "service": "s", "workspaceFolder": "/w"}],
                         ids=["image", "dockerfile", "legacy-dockerfile", "compose", "min-image", "min-build",
                              "min-compose"])
def test_valid_configurations(config: dict[str, Any]) -> None:
    check(config)


LIFECYCLE = ["initializeCommand", "onCreateCommand", "updateContentCommand", "postCreateCommand",
             "postStartCommand", "postAttachCommand"]


@pytest.mark.parametrize("hook", LIFECYCLE)
@pytest.mark.parametrize("form", ["echo hi", ["echo", "hi"], [], {"a": "echo a", "b": ["echo", "b"]}, {}])
def test_every_lifecycle_command_in_every_form(hook: str, form: Any) -> None:
    check({"image": "x", hook: form})


@pytest.mark.parametrize("hook", LIFECYCLE)
@pytest.mark.parametrize(("form", "pointer"), [
    (42, ""), (True, ""), (None, ""), (["echo", 1], "/1"), ({"a": 1}, "/a"), ({"a": {"b": "c"}}, "/a"),
    ({"a": ["x", False]}, "/a/1"), ([["nested"]], "/0"),
])
def test_unknown_lifecycle_forms_are_rejected(hook: str, form: Any, pointer: str) -> None:
    err = error({"image": "x", hook: form})
    assert err.details["pointer"] == f"/{hook}{pointer}"
    assert "expected a command string" in err.message


@pytest.mark.parametrize(("prop", "value"), [
    ("forwardPorts", [70000]), ("forwardPorts", [-1]), ("forwardPorts", ["abc"]), ("forwardPorts", ["db:70000"]),
    ("forwardPorts", ["DB:5432"]), ("forwardPorts", [3000.5]), ("forwardPorts", [True]), ("forwardPorts", 3000),
    ("appPort", 70000), ("appPort", "abc"), ("appPort", ["8000:abc"]), ("appPort", [{"port": 1}]),
])
def test_malformed_ports_are_rejected(prop: str, value: Any) -> None:
    err = error({"image": "x", prop: value})
    assert err.details["pointer"].startswith(f"/{prop}")
    assert "expected" in err.message


# One wrong type for each property of the spec: the error points at it.
WRONG_TYPES: list[tuple[str, Any]] = [
    ("name", 1), ("image", ["debian"]), ("image", ""), ("features", []), ("features", {"a": 1}),
    ("features", {"a": {"opt": {"nested": 1}}}), ("overrideFeatureInstallOrder", "a"),
    ("overrideFeatureInstallOrder", [1]), ("forwardPorts", {}), ("portsAttributes", []),
    ("portsAttributes", {"3000": {"onAutoForward": "explode"}}), ("portsAttributes", {"3000": {"protocol": "ftp"}}),
    ("portsAttributes", {"3000": {"elevateIfNeeded": "yes"}}), ("otherPortsAttributes", {"label": 1}),
    ("otherPortsAttributes", {"color": "red"}), ("otherPortsAttributes", {"onAutoForward": "openBrowserOnce"}),
    ("appPort", True), ("containerEnv", {"A": 1}), ("containerEnv", {"A": None}), ("containerEnv", []),
    ("remoteEnv", {"A": 1}), ("containerUser", 0), ("remoteUser", 1000), ("updateRemoteUserUID", "true"),
    ("userEnvProbe", "bash"), ("mounts", "a"), ("mounts", [1]), ("mounts", [{"type": "tmpfs", "target": "/t"}]),
    ("mounts", [{"type": "bind"}]), ("mounts", [{"type": "bind", "target": "/t", "readonly": True}]),
    ("mounts", [""]), ("workspaceFolder", 1), ("workspaceMount", {}), ("runArgs", "--x"), ("runArgs", [1]),
    ("privileged", "no"), ("capAdd", "SYS_PTRACE"), ("securityOpt", [None]), ("init", 1),
    ("overrideCommand", "false"), ("shutdownAction", "stopCompose"), ("shutdownAction", "halt"),
    ("waitFor", "postAttachCommand"), ("waitFor", 1), ("hostRequirements", {"cpus": 0}),
    ("hostRequirements", {"cpus": "2"}), ("hostRequirements", {"memory": "4GB"}), ("hostRequirements", {"memory": 4}),
    ("hostRequirements", {"storage": "lots"}), ("hostRequirements", {"gpu": "yes"}),
    ("hostRequirements", {"gpu": {"cores": 0}}), ("hostRequirements", {"gpu": {"vram": "1gb"}}),
    ("hostRequirements", {"disk": "1gb"}), ("customizations", []), ("secrets", []), ("secrets", {"1BAD": {}}),
    ("secrets", {"A": {"description": 1}}), ("secrets", {"A": {"default": "x"}}), ("secrets", {"A": "x"}),
    ("extensions", "a"), ("settings", []), ("devPort", "8000"), ("$schema", 1),
]


@pytest.mark.parametrize(("prop", "value"), WRONG_TYPES)
def test_wrong_types_are_rejected_at_their_pointer(prop: str, value: Any) -> None:
    err = error({"image": "x", prop: value})
    assert err.details["pointer"].startswith(f"/{prop.replace('/', '~1')}"), err.message
    assert err.details["file"] == "devcontainer.json"


@pytest.mark.parametrize(("config", "pointer", "says"), [
    ({"build": {"dockerfile": 1}}, "/build/dockerfile", "expected"),
    ({"build": {"dockerfile": "D", "args": {"A": 1}}}, "/build/args/A", "expected"),
    ({"build": {"dockerfile": "D", "cacheFrom": 1}}, "/build/cacheFrom", "expected"),
    ({"build": {"dockerfile": "D", "platform": "x"}}, "/build/platform", "unknown property 'platform'"),
    ({"build": {"context": ".."}}, "/build", "missing property 'dockerfile'"),
    ({"dockerComposeFile": 1, "service": "s", "workspaceFolder": "/w"}, "/dockerComposeFile", "expected"),
    ({"dockerComposeFile": "c.yml", "service": ["s"], "workspaceFolder": "/w"}, "/service", "expected"),
    ({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w", "runServices": "db"}, "/runServices",
     "expected"),
])
def test_wrong_types_in_build_and_compose(config: dict[str, Any], pointer: str, says: str) -> None:
    err = error(config)
    assert err.details["pointer"] == pointer
    assert says in err.message


@pytest.mark.parametrize(("config", "pointer", "says"), [
    ({"name": "no image"}, "", "expected one of image, build (with dockerfile) or dockerComposeFile"),
    ({}, "", "expected one of image"),
    ({"image": "x", "build": {"dockerfile": "D"}}, "/build", "image and build cannot both be set"),
    ({"image": "x", "dockerFile": "D"}, "/dockerFile", "image and dockerFile cannot both be set"),
    ({"image": "x", "dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w"}, "/dockerComposeFile",
     "image and dockerComposeFile"),
    ({"build": {"dockerfile": "D"}, "dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w"},
     "/dockerComposeFile", "cannot both be set"),
    ({"dockerComposeFile": "c.yml", "workspaceFolder": "/w"}, "", "missing property 'service'"),
    ({"dockerComposeFile": "c.yml", "service": "s"}, "", "missing property 'workspaceFolder'"),
    ({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w", "appPort": 1}, "/appPort",
     "does not apply to Docker Compose"),
    ({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w", "workspaceMount": "x"},
     "/workspaceMount", "does not apply to Docker Compose"),
    ({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w", "shutdownAction": "stopContainer"},
     "/shutdownAction", "one of none, stopCompose"),
    ({"image": "x", "service": "s"}, "/service", "only applies with dockerComposeFile"),
    ({"image": "x", "runServices": []}, "/runServices", "only applies with dockerComposeFile"),
    ({"image": "x", "context": ".."}, "/context", "'context' needs 'dockerFile'"),
])
def test_kinds_of_configuration_do_not_mix(config: dict[str, Any], pointer: str, says: str) -> None:
    err = error(config)
    assert err.details["pointer"] == pointer
    assert says in err.message


def test_unknown_top_level_properties_are_rejected_as_the_spec_schema_does() -> None:
    # devContainer.base.schema.json ends with "unevaluatedProperties": false: no unknown top-level property
    err = error(None, '{\n  "image": "x",\n  "forwardPort": [3000]\n}')
    assert err.details == {"file": "devcontainer.json", "pointer": "/forwardPort", "line": 3, "column": 3}
    assert "unknown property 'forwardPort'" in err.message
    assert err.hint == "did you mean 'forwardPorts'?"
    err = error({"image": "x", "zzzz": 1})
    assert "containers.dev" in (err.hint or "")


def test_tool_specific_properties_live_under_customizations() -> None:
    check({"image": "x", "customizations": {"anything": {"goes": ["here", 1, None]}}})


def test_the_message_names_file_line_column_pointer_and_what_was_expected() -> None:
    text = '{\n  // a comment\n  "image": "x",\n  "forwardPorts": [3000, 70000]\n}'
    err = error(None, text)
    assert err.message == ('devcontainer.json:4:26: /forwardPorts/1: expected a port number (0-65535) or a '
                           '"host:port" string, got the number 70000')
    assert err.details == {"file": "devcontainer.json", "pointer": "/forwardPorts/1", "line": 4, "column": 26}
    assert "\n" not in err.message


def test_of_several_errors_the_first_in_the_file_is_reported() -> None:
    text = '{"waitFor": "never", "image": "x", "init": "yes"}'
    assert error(None, text).details["pointer"] == "/waitFor"
    text = '{"init": "yes", "image": "x", "waitFor": "never"}'
    assert error(None, text).details["pointer"] == "/init"


def test_a_top_level_array_is_not_a_configuration() -> None:
    err = error([])
    assert err.details["pointer"] == ""
    assert "expected a devcontainer.json object" in err.message


@pytest.mark.parametrize("fragment", [
    {"hostRequirements": {"gpu": True}}, {"hostRequirements": {"gpu": False}}, {"hostRequirements": {"memory": "512"}},
    {"forwardPorts": ["localhost:3000"]}, {"forwardPorts": []}, {"appPort": 3000}, {"appPort": "3000:3000"},
    {"appPort": "[::1]:8080:80/tcp"}, {"mounts": ["type=volume,source=v,target=/v"]}, {"remoteEnv": {"A": None}},
    {"shutdownAction": "none"}, {"userEnvProbe": "none"}, {"userEnvProbe": "loginShell"},
    {"userEnvProbe": "interactiveShell"}, {"waitFor": "initializeCommand"}, {"waitFor": "updateContentCommand"},
    {"waitFor": "postCreateCommand"}, {"waitFor": "postStartCommand"}, {"features": {"f": True}},
    {"features": {"ghcr.io/devcontainers/features/python:1": {"version": "3.12", "installTools": False}}},
    {"portsAttributes": {"8080": {"label": "x", "futureAttribute": 1}}}, {"secrets": {}},
    {"customizations": {"vscode": {"extensions": []}, "jetbrains": {"backend": "PyCharm"}}},
])
def test_spec_fragments_are_accepted(fragment: dict[str, Any]) -> None:
    check({"image": "x", **fragment})


@pytest.mark.parametrize("fragment", [
    {"dockerComposeFile": "docker-compose.yml"}, {"dockerComposeFile": []}, {"shutdownAction": "none"},
    {"overrideCommand": True}, {"runServices": []}, {"containerEnv": {"A": "b"}}, {"mounts": []},
])
def test_compose_fragments_are_accepted(fragment: dict[str, Any]) -> None:
    check({"dockerComposeFile": "c.yml", "service": "s", "workspaceFolder": "/w", **fragment})


def test_build_cache_from_may_be_a_string() -> None:
    check({"build": {"dockerfile": "Dockerfile", "cacheFrom": "ghcr.io/me/cache"}})
