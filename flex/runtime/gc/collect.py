"""Garbage collection: mark from image names, live leases and containers' snapshots; sweep the rest.

Roots: every image name (its target, platform manifest, config, layer blobs and layer snapshots), every
resource held by a live lease (see leases.py), and every active or view snapshot that is not an
unpack in progress (``extract-…``: those live only under a lease). Ancestors of a kept snapshot are
kept. The mark and the sweep of rows and blobs run inside one write transaction, so a pull that adds a
resource to its lease either sees it swept before it looks or is waited for. Snapshot directories go
after that transaction commits (their rows are gone, so nothing can reach them; a crash leaves them to
``cleanup``): deleting trees under the write lock made pulls and creates time out behind GC.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from flex.errors import FlexError
from flex.runtime.images.mediatypes import INDEX_TYPES, MAX_MANIFEST_SIZE
from flex.runtime.images.store import ImageStore
from flex.runtime.leases.leases import held_resources
from flex.runtime.snapshots.base import Cleaner
from flex.runtime.unpack.unpacker import chain_ids
from flex.runtime.userns.shift import remove_as_namespace_root

__all__ = ["GcResult", "collect"]


@dataclass
class GcResult:
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    freed: int = 0


def _json(store: ImageStore, digest: str) -> object:
    try:
        return json.loads(store.content.read(digest, max_size=MAX_MANIFEST_SIZE))
    except (FlexError, ValueError):
        return None


def _mark_manifest(store: ImageStore, digest: str, blobs: set[str], snaps: set[str]) -> None:
    blobs.add(digest)
    obj = _json(store, digest)
    if not isinstance(obj, dict):
        return
    if obj.get("mediaType") in INDEX_TYPES or "manifests" in obj:
        for m in obj.get("manifests") or []:
            if isinstance(m, dict) and isinstance(m.get("digest"), str) and store.content.exists(m["digest"]):
                _mark_manifest(store, m["digest"], blobs, snaps)
        return
    cfg_digest = (obj.get("config") or {}).get("digest")
    for lay in obj.get("layers") or []:
        if isinstance(lay, dict) and isinstance(lay.get("digest"), str):
            blobs.add(lay["digest"])
    if isinstance(cfg_digest, str):
        blobs.add(cfg_digest)
        cfg = _json(store, cfg_digest)
        diff_ids = ((cfg or {}).get("rootfs") or {}).get("diff_ids") if isinstance(cfg, dict) else None
        if isinstance(diff_ids, list):
            snaps.update(chain_ids([str(d) for d in diff_ids]))


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def collect(store: ImageStore, *, dry_run: bool = False) -> GcResult:
    result = GcResult()
    forgotten: list[Path] = []
    with store.db.transaction() as conn:
        held = held_resources(store.db)
        blobs = {ref for kind, ref in held if kind == "content"}
        snaps = {ref for kind, ref in held if kind == "snapshot"}
        for row in conn.execute("SELECT target, manifest FROM images").fetchall():
            _mark_manifest(store, row["target"], blobs, snaps)
            _mark_manifest(store, row["manifest"], blobs, snaps)
        infos = {info.key: info for info in store.snapshots.walk()}
        for info in infos.values():
            if info.kind.value != "committed" and not info.key.startswith("extract-"):
                snaps.add(info.key)  # a container's snapshot: a root
        keep: set[str] = set()
        for key in list(snaps):
            cur: str | None = key
            while cur is not None and cur in infos and cur not in keep:
                keep.add(cur)
                cur = infos[cur].parent
        doomed = [k for k in infos if k not in keep]
        # children before parents: a snapshot can only go once nothing builds on it
        remaining = set(doomed)
        while remaining:
            leaves = [k for k in remaining if not any(infos[o].parent == k for o in remaining)]
            if not leaves:
                break
            for k in leaves:
                if not dry_run:
                    with contextlib.suppress(FlexError):
                        forgotten.append(store.snapshots.forget(k))
                result.snapshots.append(k)
                remaining.discard(k)
        for digest in store.content.walk():
            if digest in blobs:
                continue
            with contextlib.suppress(FlexError):
                result.freed += store.content.size(digest)
            if not dry_run:
                store.content.delete(digest)
            result.blobs.append(digest)
    if dry_run:
        for k in result.snapshots:  # (unlocked: sizes are a report, not a decision)
            with contextlib.suppress(FlexError, OSError):
                result.freed += store.snapshots.usage(k).size
    if forgotten and os.geteuid() != 0:
        # rootless layers hold directories of subuids (and keep-id copies, SHIFTED_DIR, are all theirs): the
        # user may not empty them, root of a namespace with the user's map may
        with contextlib.suppress(FlexError):
            for path in forgotten:
                result.freed += _size(path)
            remove_as_namespace_root(forgotten)
    for path in forgotten:
        result.freed += store.snapshots.remove_dir(path)
    if not dry_run:
        store.content.clean_tmp()
        if isinstance(store.snapshots, Cleaner):
            store.snapshots.cleanup()
    return result
