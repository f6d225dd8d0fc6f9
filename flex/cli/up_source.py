"""What `flex up` asks for: the environment's name, source and devcontainer reference, from a folder or a git
URL, and a digest of the devcontainer files so that an edit changes the spec (pure but for reading files).

    want = desired("/home/me/app", None, None, remote=False)
    want.name == "app"; want.spec["source"] == {"path": "/home/me/app"}; want.spec["configHash"] == "sha256:..."
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.errors import FailedPrecondition, InvalidArgument, InvalidConfiguration, NotFound, UsageError

__all__ = ["DEFAULT_IMAGE", "Desired", "config_digest", "desired", "env_name", "is_git_url"]

# The image `flex image bootstrap` makes on an offline machine (the installer makes it too).
DEFAULT_IMAGE = "flex.local/debian:bookworm"
_GIT = re.compile(r"^(https?://|ssh://|git://|file://|git@)\S+$")
_MAX_HASHED = 4096  # files under the config's folder: a folder that big is not a .devcontainer folder


def is_git_url(arg: str) -> bool:
    return bool(_GIT.match(arg)) and not os.path.isdir(arg)


def env_name(base: str) -> str:
    """A valid environment name from a folder or repository name: lower case, digits and '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:63].strip("-")
    return name or "workspace"


@dataclass
class Desired:
    name: str
    spec: dict[str, Any]
    folder: Path | None  # the local folder, when there is one
    config: dict[str, Any] = field(default_factory=dict)  # the resolved devcontainer.json, when local
    config_file: Path | None = None


def _walk_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "node_modules"))
        out += [Path(dirpath) / f for f in sorted(filenames)]
        if len(out) > _MAX_HASHED:
            break
    return out


def config_digest(folder: Path, config_file: Path, config: dict[str, Any]) -> str:
    """sha256 over the files that make the container: the config, everything beside it in its own folder
    (a Dockerfile, local features, scripts they copy), and a Dockerfile or build context named outside it."""
    files = {config_file}
    if config_file.parent != folder:
        files.update(_walk_files(config_file.parent))
    build: dict[str, Any] = config["build"] if isinstance(config.get("build"), dict) else {}
    dockerfile = build.get("dockerfile") or config.get("dockerFile")
    if isinstance(dockerfile, str):
        files.add((config_file.parent / dockerfile).resolve())
    for key in (config.get("features") or {}):
        if isinstance(key, str) and key.startswith("."):
            files.update(_walk_files((config_file.parent / key).resolve()))
    h = hashlib.sha256()
    for path in sorted(files):
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a missing Dockerfile is the build's error to report, with its file name
        rel = os.path.relpath(path, folder)
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return "sha256:" + h.hexdigest()


def _git_origin(folder: Path) -> tuple[str, str | None] | None:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

    url = git("remote", "get-url", "origin")
    if url is None:
        return None
    return url, git("symbolic-ref", "--short", "-q", "HEAD")


def _no_config(folder: Path) -> InvalidConfiguration:
    return InvalidConfiguration(
        f"no devcontainer.json in {folder}",
        hint=f"create .devcontainer/devcontainer.json, for example {{\"image\": \"{DEFAULT_IMAGE}\"}} "
             f"(the Debian base `flex image bootstrap {DEFAULT_IMAGE}` makes), or pass --config FILE")


def desired(arg: str | None, workspace_folder: str | None, config: str | None, *, remote: bool,
            name: str | None = None, ref: str | None = None, docker: bool = False,
            env: Mapping[str, str] | None = None, validate: bool = True) -> Desired:
    """The environment `flex up` wants. ``remote``: a control plane whose runners cannot see this machine's
    folders, so a folder is brought up from its git origin. ``env`` and ``validate`` go to read_config
    (flex/cli/fast_up.py reads without the schema, watching which variables the config uses)."""
    from flex.devcontainer.config import read_config

    if arg is not None and workspace_folder is not None:
        raise UsageError("give a PATH or --workspace-folder, not both")
    target = arg if arg is not None else workspace_folder
    spec: dict[str, Any] = {"desiredPhase": "running", "docker": docker}
    if target is not None and is_git_url(target):
        if config is not None and (config.startswith("/") or ".." in config.split("/")):
            raise InvalidArgument(f"--config {config}: with a git URL, give a path inside the repository",
                                  hint="e.g. --config .devcontainer/devcontainer.json")
        spec["source"] = {"git": target, **({"ref": ref} if ref else {})}
        if config is not None:
            spec["devcontainer"] = {"path": config}
        base = target.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
        return Desired(name or env_name(base), spec, None)

    folder = Path(os.path.abspath(target or "."))
    if not folder.is_dir():
        raise NotFound(f"{folder} is not a folder", hint="flex up [PATH | GIT_URL]")
    config_file = Path(os.path.abspath(config)) if config is not None else None
    if config_file is not None and not config_file.is_file():
        raise NotFound(f"--config {config}: no such file")
    try:
        resolved = read_config(folder, config_file, mount_git_root=False, cwd=folder, env=env,
                               validate=validate)
    except NotFound as err:
        if config_file is None and "no devcontainer configuration" in err.message:
            raise _no_config(folder) from None
        raise
    shown = Path(resolved.workspace.config_file)
    if os.path.commonpath([os.path.realpath(shown), os.path.realpath(folder)]) != os.path.realpath(folder):
        raise InvalidArgument(f"--config {config}: the file is outside {folder}",
                              hint="the runner reads the config from the folder: keep it inside")
    rel = os.path.relpath(shown, folder)
    if remote:
        origin = _git_origin(folder)
        if origin is None:
            raise FailedPrecondition(f"{folder} is a local folder, and the control plane's runners cannot see it",
                                     hint="push it to a git repository and run `flex up GIT_URL`, "
                                          "or bring it up locally without --server")
        spec["source"] = {"git": origin[0], **({"ref": ref or origin[1]} if (ref or origin[1]) else {})}
    else:
        if ref is not None:
            raise UsageError("--ref goes with a git URL", hint="flex up GIT_URL --ref BRANCH")
        spec["source"] = {"path": str(folder)}
    if config_file is not None or rel not in (".devcontainer/devcontainer.json", ".devcontainer.json"):
        spec["devcontainer"] = {"path": rel}
    spec["configHash"] = config_digest(folder, shown, resolved.configuration)
    return Desired(name or env_name(folder.name), spec, folder, resolved.configuration, shown)
