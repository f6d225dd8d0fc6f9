"""Adapter from the image store of `flex image` (names → manifests, configs and committed layer snapshots,
flex/runtime/images/store.py) to the containers' ``ImageSource`` (rootfs.py): an image name resolves to its
layer directories, top first, and its config. Imported only when IMAGE is a name, not a directory.

Importing the image store costs ~15 ms (content, snapshots, unpack, ...), a tenth of `flex runtime run`.
So a resolution is remembered (table ``container_image_cache``) with the manifest digest it came from,
and reused only while the store still names that same manifest and every layer directory still exists;
anything else takes the full path. With ``pull_missing`` (`flex runtime run`), a name the store does not
have is pulled first. Imports nothing from flex but flex.errors (and flex.runtime).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, cast

from flex.errors import NotFound
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.containers.rootfs import ImageConfig, ResolvedImage

if TYPE_CHECKING:
    from flex.runtime.images.store import Image

__all__ = ["StoreImages"]

_SCHEMA = [
    "DROP TABLE IF EXISTS container_image_cache",  # a cache: version 2 simply starts again
    """CREATE TABLE IF NOT EXISTS container_image_cache (
        ref TEXT PRIMARY KEY, name TEXT NOT NULL, manifest TEXT NOT NULL, lowers TEXT NOT NULL,
        config TEXT NOT NULL, snapshot TEXT)""",
]


class StoreImages:
    def __init__(self, home: Home, db: MetadataDB | None = None, *, pull_missing: bool = False) -> None:
        self.home = home
        self.db = db or MetadataDB(home.db_path)
        self.pull_missing = pull_missing  # as `docker run` and `podman run` do (pull policy "missing")
        self.db.ensure_schema("container_image_cache", 2, _SCHEMA)

    def _cached(self, ref: str) -> ResolvedImage | None:
        try:
            row = self.db.query_one("SELECT * FROM container_image_cache WHERE ref = ?", (ref,))
            if row is None:
                return None
            current = self.db.query_one("SELECT manifest FROM images WHERE name = ?", (row["name"],))
        except sqlite3.Error:  # the image store's table is not there (yet), or changed shape
            return None
        if current is None or current["manifest"] != row["manifest"]:
            return None
        lowers = [Path(p) for p in json.loads(row["lowers"])]
        if not lowers or not all(p.is_dir() for p in lowers):
            return None
        return ResolvedImage(ref=row["name"], lowers=lowers, config=ImageConfig(**json.loads(row["config"])),
                             snapshot=row["snapshot"])

    def resolve(self, ref: str) -> ResolvedImage:
        cached = self._cached(ref)
        if cached is not None:
            return cached
        from flex.runtime.images.store import ImageStore

        store = ImageStore(self.home)
        try:
            image = store.get(ref)
        except NotFound:
            if not self.pull_missing:
                raise
            image = _pull(self.home, ref)
        # (cast: ImageStore's own `list` method shadows the builtin in its annotations)
        lowers = [Path(p) for p in cast(Sequence[str], store.lowers(ref))]
        if not lowers:
            raise NotFound(f"image {ref!r} has no layers")
        config = ImageConfig.from_oci(image.config)
        if not config.cmd and not config.entrypoint:
            config.cmd = ["/bin/sh"]
        with self.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO container_image_cache (ref, name, manifest, lowers, config, snapshot) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (ref, image.name, image.manifest_digest,
                                                       json.dumps([str(p) for p in lowers]),
                                                       json.dumps(asdict(config)), image.top_snapshot))
        return ResolvedImage(ref=image.name, lowers=lowers, config=config, snapshot=image.top_snapshot)


def _pull(home: Home, ref: str) -> Image:
    """Pull a missing image, with progress on stderr (stdout is the container's)."""
    from flex.runtime.base.progress import for_terminal
    from flex.runtime.images.store import ImageStore
    from flex.runtime.transfer.pull import pull
    from flex.runtime.unpack.userns import store_ownership

    progress = for_terminal()
    try:
        progress.step(f"image {ref} is not here: pulling it")
        return pull(ImageStore(home, ownership=store_ownership()), ref, progress=progress)
    finally:
        progress.close()
