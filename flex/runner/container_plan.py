"""What the container of an environment should be, from its devcontainer.json (pure: no I/O but reading
the config through flex/devcontainer).

This slice takes image-based configs only: ``build``/``dockerFile`` and ``features`` need the builder
(``BuildNotSupported``), ``dockerComposeFile`` is not supported yet. Defaults as the reference CLI's:
``workspaceFolder`` /workspaces/<env name>, ``overrideCommand`` true (a sleep-forever command keeps the
container up), ``waitFor`` updateContentCommand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.api import DevcontainerRef
from flex.atomic import write_atomic
from flex.devcontainer.config import read_config
from flex.errors import FlexError, InvalidConfiguration, NotFound, UsageError

__all__ = ["HOOKS", "KEEP_ALIVE", "WAIT_FOR", "ContainerPlan", "Hook", "PlanError", "plan_container",
           "read_devcontainer"]

# Every lifecycle hook the runner runs, in the spec's order (postAttachCommand is for whoever attaches).
HOOKS = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand")
WAIT_FOR = ("initializeCommand", *HOOKS, "postAttachCommand")
# PID 1's command when overrideCommand is true: sleep until stopped; SIGTERM ends it at once.
KEEP_ALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while sleep 86400 & wait $!; do :; done"]


class PlanError(Exception):
    """The config cannot run here (yet): a condition reason and a message saying what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Hook:
    """One lifecycle command: named argvs run in parallel (one unnamed argv for the string/array forms)."""

    name: str
    commands: dict[str, list[str]]


@dataclass(frozen=True)
class ContainerPlan:
    image: str
    workspace_folder: str
    container_env: dict[str, str] = field(default_factory=dict)
    container_user: str | None = None
    remote_user: str | None = None
    override_command: bool = True
    hooks: tuple[Hook, ...] = ()
    wait_for: str = "updateContentCommand"
    forward_ports: tuple[int, ...] = ()


def read_devcontainer(source: Path, ref: DevcontainerRef, state: Path, env: dict[str, str]) -> dict[str, Any]:
    """The resolved configuration: inline (spec.devcontainer.config), at spec.devcontainer.path, or found
    where the reference CLI looks. Raises PlanError (InvalidDevcontainer, NoDevcontainer)."""
    config_file: Path | None = None
    if ref.config is not None:
        config_file = state / "devcontainer.json"
        write_atomic(config_file, json.dumps(ref.config))
    elif ref.path is not None:
        config_file = source / ref.path
        real, inside = os.path.realpath(config_file), os.path.realpath(source)
        if os.path.commonpath([real, inside]) != inside:
            raise PlanError("InvalidDevcontainer", f"devcontainer.path {ref.path} leads outside the source")
    try:
        return read_config(source, config_file, env=env, mount_git_root=False, cwd=source).configuration
    except NotFound as err:
        raise PlanError("NoDevcontainer", f"{err.message}; add .devcontainer/devcontainer.json to the source "
                        "or set spec.devcontainer") from None
    except (InvalidConfiguration, UsageError) as err:
        raise PlanError("InvalidDevcontainer", err.message + (f" ({err.hint})" if err.hint else "")) from None
    except FlexError as err:
        raise PlanError("InvalidDevcontainer", err.message) from None


def _argv(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return ["/bin/sh", "-c", value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise PlanError("InvalidDevcontainer", f"{where}: expected a string or an array of strings")


def _hook(name: str, value: Any) -> Hook | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, dict):
        cmds = {str(k): _argv(v, f"{name}.{k}") for k, v in value.items() if v not in (None, "", [])}
        return Hook(name, cmds) if cmds else None
    return Hook(name, {"": _argv(value, name)})


def plan_container(config: dict[str, Any], env_name: str) -> ContainerPlan:
    if "dockerComposeFile" in config:
        raise PlanError("ComposeNotSupported", "dockerComposeFile configurations are not supported yet; "
                        "use an image-based devcontainer.json")
    if "build" in config or "dockerFile" in config or "dockerfile" in config:
        raise PlanError("BuildNotSupported", "building a Dockerfile is not supported by this runner yet; "
                        "use an image-based devcontainer.json (\"image\": ...)")
    if config.get("features"):
        raise PlanError("BuildNotSupported", "devcontainer features need an image build, which this runner "
                        "does not do yet; remove \"features\" or bake them into the image")
    image = config.get("image")
    if not isinstance(image, str) or not image:
        raise PlanError("InvalidDevcontainer", "the devcontainer.json names no image (\"image\": ...)")
    folder = config.get("workspaceFolder") or f"/workspaces/{env_name}"
    if not isinstance(folder, str) or not folder.startswith("/") or ".." in folder.split("/"):
        raise PlanError("InvalidDevcontainer", f"workspaceFolder {folder!r}: expected an absolute path")
    wait_for = config.get("waitFor", "updateContentCommand")
    if wait_for not in WAIT_FOR:
        raise PlanError("InvalidDevcontainer", f"waitFor {wait_for!r}: expected one of {', '.join(WAIT_FOR)}")
    hooks = tuple(h for name in HOOKS if (h := _hook(name, config.get(name))) is not None)
    ports = tuple(p for p in config.get("forwardPorts") or [] if isinstance(p, int) and 0 < p < 65536)
    env = {str(k): str(v) for k, v in (config.get("containerEnv") or {}).items()}
    return ContainerPlan(image=image, workspace_folder=folder, container_env=env,
                         container_user=config.get("containerUser"),
                         remote_user=config.get("remoteUser") or config.get("containerUser"),
                         override_command=config.get("overrideCommand", True) is not False,
                         hooks=hooks, wait_for=wait_for, forward_ports=ports)
