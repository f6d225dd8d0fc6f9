"""A configuration's features, resolved on this machine: fetched through the cache (fetch.py), checked,
put in install order; and devcontainer-lock.json read and written beside the config, as the reference does
(written when it changes; with --frozen-lockfile, a lockfile that would change is an error instead, before
anything is built, as the reference's --experimental-frozen-lockfile)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from flex.atomic import write_atomic
from flex.devcontainer.config import ResolvedConfig
from flex.devcontainer.features.lockfile import lockfile_path, lockfile_text, parse_lockfile
from flex.devcontainer.features.order import Feature, ordered_features
from flex.errors import FailedPrecondition, FlexError
from flex.home import flex_home
from flex.runner.build.fetch import FeatureFetcher

__all__ = ["check_frozen_lockfile", "feature_cache_dir", "resolve_features", "write_lockfile"]


def feature_cache_dir() -> Path:
    return flex_home() / "cache" / "features"


def _read_lock(config_file: str) -> dict[str, object] | None:
    path = lockfile_path(config_file)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise FlexError(f"{path}: cannot be read: {err.strerror}") from err
    return parse_lockfile(text, path)


def resolve_features(resolved: ResolvedConfig, *, progress: Callable[[str], None] | None = None,
                     cache_dir: Path | None = None) -> list[Feature]:
    """The config's features in install order (empty when it has none)."""
    config = resolved.configuration
    if not config.get("features"):
        return []
    config_file = resolved.workspace.config_file
    with FeatureFetcher(cache_dir or feature_cache_dir(), workspace_folder=resolved.local_workspace_folder,
                        lock=_read_lock(config_file), progress=progress) as fetch:
        return ordered_features(config, os.path.dirname(config_file), fetch)


def write_lockfile(resolved: ResolvedConfig, ordered: list[Feature]) -> None:
    if not ordered:
        return
    path = Path(lockfile_path(resolved.workspace.config_file))
    text = lockfile_text(ordered)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text)


def check_frozen_lockfile(resolved: ResolvedConfig, ordered: list[Feature]) -> None:
    """FailedPrecondition unless devcontainer-lock.json already says what this build would write."""
    if not ordered:
        return
    path = lockfile_path(resolved.workspace.config_file)
    hint = "run `flex build` without --frozen-lockfile to update it, and commit it"
    try:
        have = parse_lockfile(Path(path).read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        raise FailedPrecondition(f"{path} does not exist (--frozen-lockfile)", hint=hint) from None
    except OSError as err:
        raise FlexError(f"{path}: cannot be read: {err.strerror}") from err
    want = json.loads(lockfile_text(ordered))
    if have != want:
        ids = sorted(k for k in {*have.get("features", {}), *want["features"]}
                     if have.get("features", {}).get(k) != want["features"].get(k))
        raise FailedPrecondition(f"{path} does not match the configuration's features (--frozen-lockfile): "
                                 f"{', '.join(ids) or 'its layout'} would change", hint=hint)
