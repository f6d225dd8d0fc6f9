"""What the container of an environment should be, from its devcontainer.json (pure: no I/O but reading
the config through flex/devcontainer).

Image-based configs directly; ``build``/``dockerFile`` and ``features`` once flex/runner/build/ has built
their image (``plan_container(config, name, built)``); ``dockerComposeFile`` is not supported yet. Defaults
as the reference CLI's:
``workspaceFolder`` /workspaces/<env name>, ``overrideCommand`` true (a sleep-forever command keeps the
container up), ``waitFor`` updateContentCommand.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flex.api import DevcontainerRef
from flex.atomic import write_atomic
from flex.devcontainer.config import ResolvedConfig, read_config
from flex.errors import FlexError, InvalidConfiguration, NotFound, UsageError
from flex.runner.mounts import Mount, MountError, parse_mount

__all__ = ["HOOKS", "KEEP_ALIVE", "PROBES", "WAIT_FOR", "ContainerPlan", "Hook", "HostRequirements", "PlanError",
           "needs_build", "plan_container", "read_devcontainer", "resolve_devcontainer"]

# Every lifecycle hook the runner runs, in the spec's order (postAttachCommand is for whoever attaches).
HOOKS = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand")
WAIT_FOR = ("initializeCommand", *HOOKS, "postAttachCommand")
# PID 1's command when overrideCommand is true: sleep until stopped; SIGTERM ends it at once.
KEEP_ALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while sleep 86400 & wait $!; do :; done"]
# userEnvProbe: the flags of the user's shell the reference CLI starts to read the environment hooks see
PROBES = {"none": None, "loginShell": "-lc", "interactiveShell": "-ic", "loginInteractiveShell": "-lic"}
_CAPS = {"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
         "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
         "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
         "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
         "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
         "CHECKPOINT_RESTORE"}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(tb|gb|mb|kb|b)?\s*", re.I)


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
    origin: str = ""  # the feature (user id) whose hook this is; "" for devcontainer.json's own


@dataclass(frozen=True)
class HostRequirements:
    cpus: int | None = None
    memory: int | None = None
    storage: int | None = None
    gpu: bool = False


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
    public_ports: tuple[int, ...] = ()  # portsAttributes[port].visibility == "public": anyone may open its preview
    remote_env: dict[str, str | None] = field(default_factory=dict)
    user_env_probe: str | None = "-lic"
    mounts: tuple[Mount, ...] = ()
    workspace_source: str | None = None  # workspaceMount's source, if given
    init: bool = True  # an init as PID 1 unless "init": false (flex's default; the reference's is off)
    docker: bool = False  # privileged: nested Docker, never a privileged container
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = False
    host_requirements: HostRequirements = field(default_factory=HostRequirements)
    initialize: Hook | None = None
    shutdown_action: str = "stopContainer"
    entrypoints: tuple[str, ...] = ()  # features' entrypoints (a built image's metadata), run before PID 1's command


def read_devcontainer(source: Path, ref: DevcontainerRef, state: Path, env: dict[str, str]) -> dict[str, Any]:
    """The resolved configuration: inline (spec.devcontainer.config), at spec.devcontainer.path, or found
    where the reference CLI looks. Raises PlanError (InvalidDevcontainer, NoDevcontainer)."""
    return resolve_devcontainer(source, ref, state, env).configuration


def resolve_devcontainer(source: Path, ref: DevcontainerRef, state: Path, env: dict[str, str]) -> ResolvedConfig:
    """As read_devcontainer, with the file and folders it came from (what a build needs)."""
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
        return read_config(source, config_file, env=env, mount_git_root=False, cwd=source)
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


def _hook(name: str, value: Any, origin: str = "") -> Hook | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, dict):
        cmds = {str(k): _argv(v, f"{name}.{k}") for k, v in value.items() if v not in (None, "", [])}
        return Hook(name, cmds, origin) if cmds else None
    return Hook(name, {"": _argv(value, name)}, origin)


def needs_build(config: dict[str, Any]) -> bool:
    """A Dockerfile or features: the image must be built (flex/runner/build/) before planning."""
    return any(k in config for k in ("build", "dockerFile", "dockerfile")) or bool(config.get("features"))


def _metadata_hooks(entries: list[dict[str, Any]]) -> tuple[Hook, ...]:
    """Every entry's hooks, hook by hook in the spec's order, entries in order (features before the config)."""
    return tuple(h for name in HOOKS for e in entries
                 if (h := _hook(name, e.get(name), str(e.get("id", "")))) is not None)


def _size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise PlanError("InvalidDevcontainer", f"{where} {value!r}: expected a size such as \"8gb\"")
    unit = (m.group(2) or "b").lower()
    return int(float(m.group(1)) * {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}[unit])


def _host_requirements(value: Any) -> HostRequirements:
    if value is None:
        return HostRequirements()
    if not isinstance(value, dict):
        raise PlanError("InvalidDevcontainer", "hostRequirements: expected an object")
    cpus = value.get("cpus")
    if cpus is not None and (not isinstance(cpus, int) or cpus < 1):
        raise PlanError("InvalidDevcontainer", f"hostRequirements.cpus {cpus!r}: expected a whole number")
    gpu = value.get("gpu", False)
    return HostRequirements(cpus=cpus, memory=_size(value.get("memory"), "hostRequirements.memory"),
                            storage=_size(value.get("storage"), "hostRequirements.storage"),
                            gpu=gpu is True)  # "optional": run without one


def _caps(value: Any) -> tuple[str, ...]:
    out = []
    for cap in value or []:
        name = str(cap).upper().removeprefix("CAP_")
        if name == "ALL" or name not in _CAPS:
            raise PlanError("InvalidDevcontainer", f"capAdd {cap!r}: not a capability flex can add "
                            "(name them one by one, e.g. SYS_PTRACE)")
        out.append(f"CAP_{name}")
    return tuple(out)


def _no_new_privileges(value: Any) -> bool:
    nnp = False
    for opt in value or []:
        opt = str(opt)
        key, _, val = opt.replace("=", ":", 1).partition(":")
        if key == "no-new-privileges":
            nnp = val in ("", "true")
        elif key in ("label", "apparmor"):
            continue  # SELinux and AppArmor labels: the user namespace is the boundary here
        else:
            raise PlanError("InvalidDevcontainer", f"securityOpt {opt!r}: not allowed (containers run in a user "
                            "namespace with flex's seccomp profile; only no-new-privileges can be set)")
    return nnp


def _ports(config: dict[str, Any]) -> tuple[int, ...]:
    """forwardPorts (numbers, or "host:port" for this container's own ports) and appPort."""
    out: list[int] = []
    for p in config.get("forwardPorts") or []:
        if isinstance(p, str) and ":" in p:
            host, _, port = p.rpartition(":")
            p = int(port) if port.isdigit() and host in ("localhost", "127.0.0.1", "") else None
        if isinstance(p, int) and 0 < p < 65536:
            out.append(p)
    app = config.get("appPort")
    for p in app if isinstance(app, list) else [app] if app is not None else []:
        port = str(p).rsplit(":", 1)[-1]
        if port.isdigit() and 0 < int(port) < 65536:
            out.append(int(port))
    return tuple(dict.fromkeys(out))


def _public_ports(config: dict[str, Any]) -> tuple[int, ...]:
    """Ports whose portsAttributes say ``"visibility": "public"`` (issue 15; keys may be "3000" or "host:3000")."""
    attrs = config.get("portsAttributes")
    out: list[int] = []
    for key, value in (attrs.items() if isinstance(attrs, dict) else ()):
        port = str(key).rsplit(":", 1)[-1]
        if isinstance(value, dict) and value.get("visibility") == "public" and port.isdigit() \
                and 0 < int(port) < 65536:
            out.append(int(port))
    return tuple(sorted(set(out)))


def plan_container(config: dict[str, Any], env_name: str, built: tuple[str, list[dict[str, Any]],
                   dict[str, Any]] | None = None) -> ContainerPlan:
    """``built``: (image, metadata entries, merged config) of an image flex/runner/build/ built."""
    if built is not None:
        return _plan_built(config, env_name, *built)
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
    workspace_source = None
    if config.get("workspaceMount"):
        try:
            wm = parse_mount(config["workspaceMount"], "workspaceMount")
        except MountError as err:
            raise PlanError("InvalidDevcontainer", str(err)) from None
        if wm.type != "bind" or not config.get("workspaceFolder"):
            raise PlanError("InvalidDevcontainer", "workspaceMount must be a bind mount, given with "
                            "workspaceFolder (as the reference CLI requires)")
        workspace_source = wm.source
    folder = config.get("workspaceFolder") or f"/workspaces/{env_name}"
    if not isinstance(folder, str) or not folder.startswith("/") or ".." in folder.split("/"):
        raise PlanError("InvalidDevcontainer", f"workspaceFolder {folder!r}: expected an absolute path")
    wait_for = config.get("waitFor", "updateContentCommand")
    if wait_for not in WAIT_FOR:
        raise PlanError("InvalidDevcontainer", f"waitFor {wait_for!r}: expected one of {', '.join(WAIT_FOR)}")
    probe = config.get("userEnvProbe", "loginInteractiveShell")
    if probe not in PROBES:
        raise PlanError("InvalidDevcontainer", f"userEnvProbe {probe!r}: expected one of {', '.join(PROBES)}")
    shutdown = config.get("shutdownAction", "stopContainer")
    if shutdown not in ("none", "stopContainer", "stopCompose"):
        raise PlanError("InvalidDevcontainer", f"shutdownAction {shutdown!r}: expected none or stopContainer")
    try:
        mounts = tuple(parse_mount(m) for m in config.get("mounts") or [])
    except MountError as err:
        raise PlanError("InvalidDevcontainer", str(err)) from None
    hooks = tuple(h for name in HOOKS if (h := _hook(name, config.get(name))) is not None)
    env = {str(k): str(v) for k, v in (config.get("containerEnv") or {}).items()}
    remote_env = {str(k): None if v is None else str(v) for k, v in (config.get("remoteEnv") or {}).items()}
    return ContainerPlan(image=image, workspace_folder=folder, container_env=env,
                         container_user=config.get("containerUser"),
                         remote_user=config.get("remoteUser") or config.get("containerUser"),
                         override_command=config.get("overrideCommand", True) is not False,
                         hooks=hooks, wait_for=wait_for, forward_ports=_ports(config),
                         public_ports=_public_ports(config),
                         remote_env=remote_env, user_env_probe=PROBES[probe], mounts=mounts,
                         workspace_source=workspace_source, init=config.get("init") is not False,
                         docker=config.get("privileged") is True, cap_add=_caps(config.get("capAdd")),
                         no_new_privileges=_no_new_privileges(config.get("securityOpt")),
                         host_requirements=_host_requirements(config.get("hostRequirements")),
                         initialize=_hook("initializeCommand", config.get("initializeCommand")),
                         shutdown_action=shutdown)


_BUILD_KEYS = ("build", "dockerFile", "dockerfile", "features")


def _plan_built(config: dict[str, Any], env_name: str, image: str, entries: list[dict[str, Any]],
                merged: dict[str, Any]) -> ContainerPlan:
    """The plan of a built image: the merged configuration (features' metadata, then devcontainer.json, as the
    reference merges them) planned like an image config, with every entry's hooks, features' first."""
    cfg = {k: v for k, v in merged.items() if k not in _BUILD_KEYS and k != "entrypoints"}
    cfg["image"] = image
    # init: on when any entry asks for it; else flex's default (on) unless devcontainer.json says false
    cfg["init"] = bool(merged.get("init")) or config.get("init") is not False
    base = plan_container(cfg, env_name)
    return replace(base, hooks=_metadata_hooks(entries),
                   entrypoints=tuple(str(e) for e in merged.get("entrypoints") or []))
