"""A devcontainer.json → the container the runner makes: defaults as the reference CLI's, hook forms,
and what this runner does not do yet."""

from __future__ import annotations

import pytest

from flex.runner.container_plan import KEEP_ALIVE, Hook, PlanError, plan_container


def test_defaults_follow_the_reference_cli() -> None:
    p = plan_container({"image": "debian"}, "app")
    assert p.workspace_folder == "/workspaces/app" and p.override_command and p.wait_for == "updateContentCommand"
    assert p.hooks == () and p.remote_user is None and KEEP_ALIVE[0] == "/bin/sh"


def test_hooks_in_string_array_and_object_forms() -> None:
    p = plan_container({"image": "debian", "postStartCommand": {"a": "echo a", "b": ["echo", "b"]},
                        "onCreateCommand": "make", "postCreateCommand": ["npm", "ci"], "updateContentCommand": ""},
                       "app")
    assert p.hooks == (Hook("onCreateCommand", {"": ["/bin/sh", "-c", "make"]}),
                       Hook("postCreateCommand", {"": ["npm", "ci"]}),
                       Hook("postStartCommand", {"a": ["/bin/sh", "-c", "echo a"], "b": ["echo", "b"]}))


def test_users_env_ports_and_override() -> None:
    p = plan_container({"image": "i", "containerUser": "dev", "containerEnv": {"A": "1"}, "forwardPorts": [3000,
                        "db:5432"], "overrideCommand": False, "workspaceFolder": "/src"}, "app")
    assert (p.container_user, p.remote_user, p.container_env) == ("dev", "dev", {"A": "1"})
    assert p.forward_ports == (3000,) and not p.override_command and p.workspace_folder == "/src"


@pytest.mark.parametrize(("config", "reason"), [
    ({"build": {"dockerfile": "Dockerfile"}}, "BuildNotSupported"),
    ({"image": "i", "features": {"ghcr.io/devcontainers/features/node:1": {}}}, "BuildNotSupported"),
    ({"dockerComposeFile": "c.yml", "service": "app"}, "ComposeNotSupported"),
    ({"name": "no image"}, "InvalidDevcontainer"),
    ({"image": "i", "waitFor": "never"}, "InvalidDevcontainer"),
])
def test_what_this_runner_does_not_do_says_so(config: dict[str, object], reason: str) -> None:
    with pytest.raises(PlanError) as err:
        plan_container(config, "app")
    assert err.value.reason == reason and err.value.message
