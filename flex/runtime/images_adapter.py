"""Adapter from the image store of `flex image` (content store + snapshots) to the containers' ImageSource.

Imports nothing from flex but flex.errors (and flex.runtime).
"""

from __future__ import annotations

from flex.errors import NotFound
from flex.runtime.rootfs import ResolvedImage

__all__ = ["StoreImages"]


class StoreImages:
    def resolve(self, ref: str) -> ResolvedImage:
        raise NotFound(f"image {ref!r} not found", hint="the image store is not available in this build; "
                       "give the absolute path of a root filesystem directory")
