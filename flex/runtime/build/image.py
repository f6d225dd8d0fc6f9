"""The built image: config (complete, with history and rootfs), manifest, names — stored like a pulled one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flex.runtime.build.builder import Builder
from flex.runtime.build.state import State
from flex.runtime.images.mediatypes import OCI_CONFIG, OCI_MANIFEST

__all__ = ["write_image"]


def _put(b: Builder, obj: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    b.ctx.held.add("content", digest)
    b.ctx.images.content.put(data, digest)
    return digest, len(data)


def write_image(b: Builder, st: State, labels: dict[str, str], tags: list[str]) -> tuple[str, str, list[str]]:
    """Store ``st`` as an image named ``tags``; returns (config digest, manifest digest, names)."""
    config = dict(st.config)
    if labels:
        config["Labels"] = {**(config.get("Labels") or {}), **labels}
    config = {k: v for k, v in config.items() if v not in (None, "", [], {}) or (k == "Labels" and v)}
    author = config.pop("Author", None)
    plat = st.platform
    image: dict[str, Any] = {
        # the last step's time: a rebuild that is all cache hits gives the same image, as Docker's does
        "created": st.history[-1]["created"] if st.history else b.created(),
        "architecture": plat.get("architecture", ""),
        "os": plat.get("os", "linux"),
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [lay["diffId"] for lay in st.layers]},
        "history": st.history,
    }
    if author:
        image["author"] = author
    if plat.get("variant"):
        image["variant"] = plat["variant"]
    config_digest, config_size = _put(b, image)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": lay["mediaType"], "digest": lay["digest"], "size": lay["size"]}
                   for lay in st.layers],
    }
    manifest_digest, _ = _put(b, manifest)
    names = [b.ctx.images.normalize(t) for t in tags]
    for name in names:
        b.ctx.images.set_name(name, manifest_digest, OCI_MANIFEST, manifest_digest)
    if not names:  # an untagged image lives as long as the build cache (as Docker's dangling images)
        b.ctx.cache.put_resources([("content", config_digest), ("content", manifest_digest)])
    return config_digest, manifest_digest, names
