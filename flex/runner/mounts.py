"""devcontainer.json ``mounts`` and ``workspaceMount``: parsed (pure), then placed on this machine.

A mount is Docker's ``--mount`` string (``source=S,target=T,type=bind|volume[,readonly]``) or the same as an
object. Binds may only take their source from the workspace (a VM runner's host is not the user's; a desktop
runner's user may also bind folders of their own machine); a volume is one of the environment's volumes on
the runner (``FLEX_HOME/runner/volumes/<env id>/.volumes/<name>/``), kept across stop, start and recreate,
removed on delete.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["Mount", "MountError", "parse_mount", "place_mounts"]

_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_KEYS = {"src": "source", "source": "source", "target": "target", "dst": "target", "destination": "target",
         "type": "type", "readonly": "readonly", "ro": "readonly", "consistency": "", "bind-propagation": ""}


class MountError(Exception):
    """A mount this runner will not make; the message says which and why."""


@dataclass(frozen=True)
class Mount:
    type: str  # bind | volume
    source: str
    target: str
    readonly: bool = False


def parse_mount(value: Any, where: str = "mounts") -> Mount:
    if isinstance(value, str):
        fields: dict[str, Any] = {}
        for part in value.split(","):
            key, sep, val = part.partition("=")
            key = key.strip().lower()
            if key not in _KEYS:
                raise MountError(f"{where} {value!r}: unknown key {key!r} (source, target, type, readonly)")
            if _KEYS[key]:
                fields[_KEYS[key]] = val.strip() if sep else True
    elif isinstance(value, dict):
        fields = {_KEYS.get(str(k).lower(), str(k)): v for k, v in value.items()}
    else:
        raise MountError(f"{where}: expected a string or an object, got {type(value).__name__}")
    kind = fields.get("type", "volume")
    if kind not in ("bind", "volume"):
        raise MountError(f"{where} {value!r}: type {kind!r} is not supported (bind or volume)")
    target, source = fields.get("target"), fields.get("source")
    if not isinstance(target, str) or not PurePosixPath(target).is_absolute() or ".." in target.split("/"):
        raise MountError(f"{where} {value!r}: target must be an absolute path")
    if not isinstance(source, str) or not source:
        raise MountError(f"{where} {value!r}: needs a source")
    ro = fields.get("readonly", False)
    readonly = ro is True or (isinstance(ro, str) and ro.lower() in ("", "1", "true"))
    if kind == "volume" and not _VOLUME_NAME.fullmatch(source):
        raise MountError(f"{where} {value!r}: volume name {source!r}: letters, digits, '_', '.', '-'")
    return Mount(kind, source, target, readonly)


def _inside(path: str, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, top]) == top


def place_mounts(mounts: tuple[Mount, ...], workspace: Path, volumes: Path, *, desktop: bool) -> tuple[
        list[str], list[Path]]:
    """``-v`` values for the runtime, and the volume directories made for them (to give the container's
    root on a root runner). Raises MountError for a bind this runner refuses."""
    out: list[str] = []
    made: list[Path] = []
    for m in mounts:
        if m.type == "bind":
            if not _inside(m.source, workspace) and not desktop:
                raise MountError(f"mount {m.source} → {m.target}: a bind mount's source must be inside the "
                                 f"workspace ({workspace}) on a VM runner; use a volume mount for other data")
            if not os.path.exists(m.source):
                raise MountError(f"mount {m.source} → {m.target}: {m.source} does not exist")
            src = Path(os.path.realpath(m.source))
        else:
            src = volumes / ".volumes" / m.source
            src.mkdir(mode=0o755, parents=True, exist_ok=True)
            made.append(src)
        out.append(f"{src}:{m.target}" + (":ro" if m.readonly else ""))
    return out, made
