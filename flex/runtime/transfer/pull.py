"""Pull: registry → content store → snapshots → name, all under a lease.

Layers download concurrently (a few threads) while they are unpacked in order as soon as each one and
its parent are ready; layers whose chain-id snapshot already exists are neither downloaded nor
unpacked. The name is written last, so a pull killed at any point leaves no listed image, only leased
content that the next pull reuses or GC removes. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flex.errors import FailedPrecondition, NotFound
from flex.runtime.base.progress import NullProgress, Progress
from flex.runtime.content.spool import Spool
from flex.runtime.diff.tarsafe import LayerStats
from flex.runtime.images.mediatypes import INDEX_TYPES, MAX_MANIFEST_SIZE
from flex.runtime.images.reference import parse_reference
from flex.runtime.images.store import (
    Image,
    ImageStore,
    chain_ids,
    media_type_of,
    parse_config,
    parse_manifest,
    platform_text,
    select_platform,
)
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.image import unpack_image
from flex.runtime.unpack.unpacker import Applier, apply_layer_stream

if TYPE_CHECKING:
    import httpx

__all__ = ["pull"]

_FETCHERS = 4


def pull(store: ImageStore, ref_text: str, *, progress: Progress | None = None,
         transport: httpx.BaseTransport | None = None, applier: Applier | None = None,
         platform: dict[str, str] | None = None) -> Image:
    """Pull ``ref_text``; from an index, the manifest for ``platform`` (default: this host's)."""
    from flex.runtime.remotes.registry import Registry, RegistryClient

    progress = progress or NullProgress()
    ref = parse_reference(ref_text)
    name = str(ref)
    with lease(store.db) as held, Registry(ref.registry, transport=transport) as reg:
        client = RegistryClient(reg, ref.repository)
        progress.step(f"resolving {name}")
        data, header_type, digest = client.get_manifest(ref.object)
        held.add("content", digest)
        store.content.put(data, digest)
        target, target_type = digest, media_type_of(data, header_type)
        manifest_digest = digest
        if target_type in INDEX_TYPES:
            desc = select_platform(data, name, platform)
            held.add("content", desc.digest)
            if desc.size > MAX_MANIFEST_SIZE:
                raise FailedPrecondition(f"{name}: platform manifest of {desc.size} bytes refused")
            data, _, manifest_digest = client.get_manifest(desc.digest)
            store.content.put(data, manifest_digest)
        manifest = parse_manifest(data, name)
        held.add("content", manifest.config.digest)
        client.fetch_blob(store.content, manifest.config.digest, manifest.config.size, max_size=MAX_MANIFEST_SIZE)
        config = parse_config(store.content.read(manifest.config.digest), manifest, name)
        if platform is not None and target_type not in INDEX_TYPES:
            _check_platform(config, platform, name)
        diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        chains = chain_ids(diff_ids)
        progress.step(f"{name}: manifest {manifest_digest}, {len(manifest.layers)} layer(s)")

        def have_snapshot(chain: str) -> bool:
            try:
                return store.snapshots.stat(chain).kind.value == "committed"
            except Exception:
                return False

        # Root unpacks in-process, so a layer can be applied while it downloads (a spool); the rootless
        # helper process reads finished blobs.
        streaming = applier is None and store.snapshots.ownership == "unshifted"
        futures: dict[int, cf.Future[str]] = {}
        spools: dict[int, Spool] = {}
        with cf.ThreadPoolExecutor(max_workers=_FETCHERS, thread_name_prefix="flex-fetch") as pool:
            for i, (layer, chain) in enumerate(zip(manifest.layers, chains, strict=True)):
                held.add("snapshot", chain)
                held.add("content", layer.digest)
                if have_snapshot(chain) and all(have_snapshot(c) for c in chains[:i]):
                    progress.done(layer.digest, "already present")
                    continue
                progress.start(layer.digest, layer.size, "downloading")
                spool = Spool() if streaming else None
                if spool is not None:  # only a streamed layer skips waiting for its download (wait_blob)
                    spools[i] = spool
                futures[i] = pool.submit(client.fetch_blob, store.content, layer.digest, layer.size,
                                         lambda n, d=layer.digest: progress.advance(d, n),  # type: ignore[misc]
                                         None, spool)

            def wait_blob(i: int) -> None:
                fut = futures.get(i)
                if fut is not None and i not in spools:
                    fut.result()
                    progress.done(manifest.layers[i].digest, "downloaded")
                elif fut is None and not store.content.exists(manifest.layers[i].digest) \
                        and not have_snapshot(chains[i]):
                    raise FailedPrecondition(f"layer {manifest.layers[i].digest} vanished during the pull")

            def applier_for(i: int) -> Applier | None:
                spool = spools.get(i)
                if spool is None:
                    return None
                final = store.content.path(manifest.layers[i].digest)

                def apply(dest: Path, blob: Path, lowers: Sequence[Path]) -> tuple[str, LayerStats]:
                    with spool.open(final) as f:
                        return apply_layer_stream(dest, f, lowers, name=manifest.layers[i].digest)
                return apply

            try:
                unpack_image(store, [(lay.digest, d) for lay, d in zip(manifest.layers, diff_ids, strict=True)],
                             held, progress, wait_blob, applier, applier_for)
                for fut in futures.values():
                    fut.result()
            except BaseException:
                for fut in futures.values():
                    fut.cancel()
                raise
        store.set_name(name, target, target_type, manifest_digest)
        progress.step(f"pulled {name} ({manifest_digest})")
    return store.get(name)



def _check_platform(config: dict[str, object], want: dict[str, str], name: str) -> None:
    """A single-platform image asked for with --platform must be that platform (containerd refuses it too)."""
    got = {"os": str(config.get("os") or ""), "architecture": str(config.get("architecture") or "")}
    if got["os"] != want["os"] or got["architecture"] != want["architecture"]:
        raise NotFound(f"{name}: the image is {platform_text(got)}, not {platform_text(want)}",
                       hint="it is not a multi-platform image; drop --platform or pull another tag")
