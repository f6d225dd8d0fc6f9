"""devcontainer-lock.json, as the reference CLI reads and writes it (lockfile.ts):

    {"features": {"<user id>": {"version": "1.2.3", "resolved": "ghcr.io/o/r/f@sha256:...",
                                "integrity": "sha256:...", "dependsOn": ["..."]}}}

next to the config (``.devcontainer-lock.json`` when the config's own name starts with "."), entries
for OCI and https features only, sorted by id, two-space JSON with a trailing newline. A locked OCI
feature is fetched by its digest, not its tag.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Iterable
from typing import Any

from flex.devcontainer.features.order import Feature, locale_compare
from flex.errors import InvalidConfiguration

__all__ = ["locked", "lockfile_path", "lockfile_text", "parse_lockfile"]


def lockfile_path(config_file: str) -> str:
    name = posixpath.basename(config_file)
    return posixpath.join(posixpath.dirname(config_file),
                          ".devcontainer-lock.json" if name.startswith(".") else "devcontainer-lock.json")


def parse_lockfile(text: str, shown: str) -> dict[str, Any]:
    """An empty file means "write one"; otherwise it must be ``{"features": {...}}``."""
    if not text.strip():
        return {"features": {}}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidConfiguration(f"{shown}: not valid JSON: {err}", details={"file": shown}) from err
    if not isinstance(data, dict) or not isinstance(data.get("features", {}), dict):
        raise InvalidConfiguration(f"{shown}: expected {{\"features\": {{...}}}}", details={"file": shown})
    for uid, entry in data.get("features", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("resolved", ""), str) \
                or not isinstance(entry.get("integrity", ""), str):
            raise InvalidConfiguration(f"{shown}: /features/{uid}: expected {{version, resolved, integrity}}",
                                       details={"file": shown, "pointer": f"/features/{uid}"})
    return data


def locked(lock: dict[str, Any] | None, user_id: str) -> dict[str, Any] | None:
    entry = (lock or {}).get("features", {}).get(user_id)
    return entry if isinstance(entry, dict) else None


def lockfile_text(features: Iterable[Feature]) -> str:
    entries: dict[str, dict[str, Any]] = {}
    for f in features:
        if f.ref.kind not in ("oci", "direct-tarball") or f.user_id in entries:
            continue
        deps = list((f.metadata.get("dependsOn") or {}).keys())
        entry: dict[str, Any] = {
            "version": f.metadata.get("version"),
            "resolved": f"{f.ref.resource}@{f.resolved.digest}" if f.ref.kind == "oci" else f.ref.url,
            "integrity": f.resolved.digest,
        }
        if deps:
            entry["dependsOn"] = deps
        entries[f.user_id] = entry
    ordered = sorted(entries, key=functools.cmp_to_key(locale_compare))
    return json.dumps({"features": {k: entries[k] for k in ordered}}, indent=2, ensure_ascii=False) + "\n"
