"""Image metadata (spec "image-metadata.md", the reference's imageMetadata.ts): the entries an image
carries in its ``devcontainer.metadata`` label, and their merge into the configuration a container is
planned from.

Entries, in order: the base image's own label entries, one per feature in install order (``id`` = the
user's feature id, plus the feature properties below), then devcontainer.json's (the config properties
below). Empty entries are dropped. A feature's ``containerEnv`` is not an entry property: it is in the
image's Env (an ENV before its install step), as with the reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CONFIG_PROPERTIES",
    "FEATURE_PROPERTIES",
    "LABEL",
    "LIFECYCLE_HOOKS",
    "config_entry",
    "feature_entry",
    "label_instruction",
    "label_value",
    "merge_configuration",
    "metadata_entries",
    "parse_label",
]

LABEL = "devcontainer.metadata"
LIFECYCLE_HOOKS = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand",
                   "postAttachCommand")
FEATURE_PROPERTIES = (*LIFECYCLE_HOOKS, "init", "privileged", "capAdd", "securityOpt", "entrypoint", "mounts",
                      "customizations")
CONFIG_PROPERTIES = (*LIFECYCLE_HOOKS, "waitFor", "customizations", "mounts", "containerEnv", "containerUser",
                     "init", "privileged", "capAdd", "securityOpt", "remoteUser", "userEnvProbe", "remoteEnv",
                     "overrideCommand", "portsAttributes", "otherPortsAttributes", "forwardPorts",
                     "shutdownAction", "updateRemoteUserUID", "hostRequirements")
_NOT_CARRIED = ("customizations", "entrypoint", *LIFECYCLE_HOOKS, "shutdownAction")


def _pick(source: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: source[k] for k in keys if k in source}


def feature_entry(user_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"id": user_id, **_pick(metadata, FEATURE_PROPERTIES)}


def config_entry(config: dict[str, Any]) -> dict[str, Any]:
    return _pick(config, CONFIG_PROPERTIES)


def metadata_entries(base: Sequence[dict[str, Any]], features: Iterable[tuple[str, dict[str, Any]]],
                     config: dict[str, Any] | None) -> list[dict[str, Any]]:
    entries = [*base, *(feature_entry(uid, meta) for uid, meta in features)]
    if config is not None:
        entries.append(config_entry(config))
    return [e for e in entries if e]


def _js(value: Any) -> str:
    """JSON.stringify's text: no spaces, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def label_value(entries: Sequence[dict[str, Any]]) -> str:
    """The label's value as an image built by the reference CLI carries it: a JSON array always (the
    reference writes ``[ \\⏎{..}, \\⏎{..} \\⏎]``; Dockerfile line continuations leave ``[ {..}, {..} ]``)."""
    return "[" + ",".join(f" {_js(e)}" for e in entries) + " ]"


def label_instruction(entries: Sequence[dict[str, Any]]) -> str:
    """The Dockerfile ``LABEL`` line the reference generates (empty when there are no entries)."""
    if not entries:
        return ""
    body = ",".join(" \\\n" + _escape(_js(e)) for e in entries)
    return f'LABEL {LABEL}="[{body} \\\n]"'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def parse_label(value: str | None) -> list[dict[str, Any]]:
    """A base image's label → its entries: an array, or (older images) one object; anything else: none."""
    if not value:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return [e for e in data if isinstance(e, dict)]
    return []


def _union(lists: Iterable[Any]) -> list[Any] | None:
    out: list[Any] = []
    for lst in lists:
        for v in lst or []:
            if v not in out:
                out.append(v)
    return out or None


def _mount_target(mount: Any) -> str | None:
    if isinstance(mount, dict):
        target = mount.get("target")
        return target if isinstance(target, str) else None
    parts = dict(p.split("=", 1) for p in str(mount).split(",") if "=" in p)
    return parts.get("target") or parts.get("dst") or parts.get("destination")


def _mounts(entries: Sequence[dict[str, Any]]) -> list[Any] | None:
    """Deduplicated by target, the last one winning, in the order of the winners' first appearance."""
    flat = [m for e in entries for m in (e.get("mounts") or [])]
    seen: set[str | None] = set()
    kept = []
    for m in reversed(flat):
        t = _mount_target(m)
        if t in seen:
            continue
        seen.add(t)
        kept.append(m)
    return list(reversed(kept)) or None


def _last(entries: Sequence[dict[str, Any]], key: str) -> Any:
    for e in reversed(entries):
        if e.get(key):
            return e[key]
    return None


def _last_bool(entries: Sequence[dict[str, Any]], key: str) -> bool | None:
    for e in reversed(entries):
        if isinstance(e.get(key), bool):
            return bool(e[key])
    return None


def _per_key(entries: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for e in entries:
        out.update(e.get(key) or {})
    return out or None


def _max_requirements(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for e in entries:
        for k, v in (e.get("hostRequirements") or {}).items():
            if k in ("cpus",) and isinstance(v, int | float):
                out[k] = max(out.get(k, 0), v)
            elif k in ("memory", "storage") and isinstance(v, str):
                out[k] = v if k not in out or _bytes(v) > _bytes(out[k]) else out[k]
            elif k == "gpu":
                prev = out.get(k)
                out[k] = v if prev in (None, False, "optional") or v is True else prev
    return out or None


def _bytes(text: str) -> int:
    m = re.match(r"^(\d+)([tgmk]b)?$", text)
    if not m:
        return 0
    unit = {"t": 1 << 40, "g": 1 << 30, "m": 1 << 20, "k": 1 << 10}.get((m.group(2) or " ")[0], 1)
    return int(m.group(1)) * unit


def merge_configuration(config: dict[str, Any], entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reference's mergeConfiguration: devcontainer.json merged with the image metadata entries.
    Lifecycle hooks become lists in entry order (``onCreateCommands`` ...), features' before the config's."""
    merged = {k: v for k, v in config.items() if k not in _NOT_CARRIED}
    custom: dict[str, list[Any]] = {}
    for e in entries:
        for k, v in (e.get("customizations") or {}).items():
            custom.setdefault(k, []).append(v)
    merged.update({
        "init": any(e.get("init") for e in entries),
        "privileged": any(e.get("privileged") for e in entries),
        "capAdd": _union(e.get("capAdd") for e in entries),
        "securityOpt": _union(e.get("securityOpt") for e in entries),
        "entrypoints": [e["entrypoint"] for e in entries if e.get("entrypoint")] or None,
        "mounts": _mounts(entries),
        "customizations": custom or None,
        **{f"{hook}s": [e[hook] for e in entries if e.get(hook)] for hook in LIFECYCLE_HOOKS},
        **{k: _last(entries, k) for k in ("waitFor", "remoteUser", "containerUser", "userEnvProbe",
                                          "otherPortsAttributes", "shutdownAction")},
        **{k: _last_bool(entries, k) for k in ("overrideCommand", "updateRemoteUserUID")},
        "remoteEnv": _per_key(entries, "remoteEnv"),
        "containerEnv": _per_key(entries, "containerEnv"),
        "portsAttributes": _per_key(entries, "portsAttributes"),
        "forwardPorts": _union(e.get("forwardPorts") for e in entries),
        "hostRequirements": _max_requirements(entries),
    })
    return {k: v for k, v in merged.items() if v is not None}
