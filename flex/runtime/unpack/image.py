"""Unpack a whole image: its layers in order, each into the snapshot of its chain id, under a lease.

Shared by pull (layers as they arrive), archive import and bootstrap (layers already in the content store).
"""

from __future__ import annotations

from collections.abc import Callable

from flex.runtime.base.progress import Progress
from flex.runtime.images.store import ImageStore, chain_ids
from flex.runtime.leases.leases import Lease
from flex.runtime.unpack.unpacker import Applier, unpack_layer

__all__ = ["unpack_image"]

def unpack_image(store: ImageStore, image_layers: list[tuple[str, str]], held: Lease | None,
                 progress: Progress, wait_blob: Callable[[int], None] | None = None,
                 applier: Applier | None = None,
                 applier_for: Callable[[int], Applier | None] | None = None) -> str | None:
    """Unpack (blob digest, diff_id) pairs in order; returns the top chain id. A store whose ownership is
    shifted (rootless) unpacks in a user-namespace helper unless ``applier`` says otherwise."""
    if applier is None and store.snapshots.ownership != "unshifted":
        from flex.runtime.unpack.userns import UsernsApplier

        helper = UsernsApplier()
        try:
            return unpack_image(store, image_layers, held, progress, wait_blob, helper, None)
        finally:
            helper.close()
    diff_ids = [d for _, d in image_layers]
    chains = chain_ids(diff_ids)
    parent: str | None = None
    for i, ((blob, diff_id), chain) in enumerate(zip(image_layers, chains, strict=True)):
        if held is not None:
            held.add("snapshot", chain)
        if wait_blob is not None:
            wait_blob(i)
        layer_applier = (applier_for(i) if applier_for is not None else None) or applier
        res = unpack_layer(store.snapshots, store.content.path(blob), diff_id, parent, applier=layer_applier,
                           on_key=(lambda k: held.add("snapshot", k)) if held is not None else None)
        if res.unpacked:
            progress.done(blob, "unpacked")
            for w in (res.stats.warnings if res.stats else [])[:20]:
                progress.step(f"warning: {w}")
        parent = chain
    return parent
