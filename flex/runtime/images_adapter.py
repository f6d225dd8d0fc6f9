"""Adapter from the image store of `flex image` (names → manifests, configs and committed layer snapshots,
flex/runtime/images.py) to the containers' ``ImageSource`` (rootfs.py): an image name resolves to its
layer directories, top first, and its config. Imported only when IMAGE is a name, not a directory.
Imports nothing from flex but flex.errors (and flex.runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from flex.errors import NotFound
from flex.runtime.home import Home
from flex.runtime.rootfs import ImageConfig, ResolvedImage

__all__ = ["StoreImages"]


class StoreImages:
    def __init__(self, home: Home) -> None:
        self.home = home

    def resolve(self, ref: str) -> ResolvedImage:
        try:
            from flex.runtime.images import ImageStore
        except ImportError:
            raise NotFound(f"image {ref!r} not found", hint="this build has no image store; give the absolute "
                           "path of a root filesystem directory") from None
        store = ImageStore(self.home)
        image = store.get(ref)
        # (cast: ImageStore's own `list` method shadows the builtin in its annotations)
        lowers = [Path(p) for p in cast(Sequence[str], store.lowers(ref))]
        if not lowers:
            raise NotFound(f"image {ref!r} has no layers")
        config = ImageConfig.from_oci(image.config)
        if not config.cmd and not config.entrypoint:
            config.cmd = ["/bin/sh"]
        return ResolvedImage(ref=image.name, lowers=lowers, config=config)
