"""Push a local image to a registry: blobs first (skipping those the registry has), then the manifest.

The exact bytes of the stored manifest are sent, so the digest a later pull resolves is the digest
the image has here. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flex.runtime.base.progress import NullProgress, Progress
from flex.runtime.images.reference import parse_reference
from flex.runtime.images.store import ImageStore

if TYPE_CHECKING:
    import httpx

__all__ = ["push"]


def push(store: ImageStore, name: str, ref_text: str, *, progress: Progress | None = None,
         transport: httpx.BaseTransport | None = None) -> str:
    """Push image ``name`` as ``ref_text``; returns the manifest digest."""
    from flex.runtime.remotes.registry import Registry, RegistryClient

    progress = progress or NullProgress()
    image = store.get(name)
    ref = parse_reference(ref_text)
    with Registry(ref.registry, transport=transport) as reg:
        client = RegistryClient(reg, ref.repository)
        source = parse_reference(image.name)
        mount_from = source.repository if source.registry == ref.registry else None
        for desc in [*image.manifest.layers, image.manifest.config]:
            progress.start(desc.digest, desc.size, "uploading")
            how = client.push_blob(desc.digest, desc.size,
                                   lambda d=desc.digest: store.content.open(d),  # type: ignore[misc]
                                   lambda n, d=desc.digest: progress.advance(d, n),  # type: ignore[misc]
                                   mount_from=mount_from)
            progress.done(desc.digest, {"exists": "already exists", "mounted": "mounted from " +
                                        (mount_from or "")}.get(how, "pushed"))
        data = store.content.read(image.manifest_digest)
        digest = client.put_manifest(ref.tag or ref.digest or "latest", data, image.manifest.media_type)
    progress.step(f"pushed {ref} ({digest})")
    return digest
