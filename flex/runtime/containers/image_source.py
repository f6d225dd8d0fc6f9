"""Adapter from the image store of `flex image` (names → manifests, configs and committed layer snapshots,
flex/runtime/images/store.py) to the containers' ``ImageSource`` (rootfs.py): an image name resolves to its
layer directories, top first, and its config. Imported only when IMAGE is a name, not a directory.

Importing the image store costs ~15 ms (content, snapshots, unpack, ...), a tenth of `flex runtime run`.
So a resolution is remembered (table ``container_image_cache``) with the manifest digest it came from,
and reused only while the store still names that same manifest and every layer directory still exists;
anything else takes the full path. Imports nothing from flex but flex.errors (and flex.runtime).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

from flex.errors import NotFound
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.containers.rootfs import ImageConfig, ResolvedImage

__all__ = ["StoreImages"]

_SCHEMA = [
    "DROP TABLE IF EXISTS container_image_cache",  # a cache: version 2 simply starts again
    """CREATE TABLE IF NOT EXISTS container_image_cache (
        ref TEXT PRIMARY KEY, name TEXT NOT NULL, manifest TEXT NOT NULL, lowers TEXT NOT NULL,
        config TEXT NOT NULL, snapshot TEXT)""",
]


class StoreImages:
    def __init__(self, home: Home, db: MetadataDB | None = None) -> None:
        self.home = home
        self.db = db or MetadataDB(home.db_path)
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
        image = store.get(ref)
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
