"""Where a backup repository keeps its objects: a local directory or S3-compatible object storage.

Imports nothing from flex but flex.errors (and flex.home for the default location).
"""

from __future__ import annotations

from pathlib import Path

from flex.backup.stores.base import Store
from flex.backup.stores.local import LocalStore
from flex.home import flex_home

__all__ = ["LocalStore", "Store", "default_location", "open_store"]


def default_location() -> Path:
    return flex_home() / "backups"


def open_store(location: str | Path | None = None) -> Store:
    """``s3:http[s]://host/bucket[/prefix]`` or a directory (default FLEX_HOME/backups)."""
    if location is None:
        return LocalStore(default_location())
    if isinstance(location, str) and location.startswith("s3:"):
        from flex.backup.stores.s3 import S3Store

        return S3Store(location)
    return LocalStore(Path(location).expanduser().absolute())
