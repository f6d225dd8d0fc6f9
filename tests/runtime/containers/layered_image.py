"""`python -m tests.runtime.containers.layered_image BASE NAME N`: store image NAME = image BASE plus N
small layers (layer i adds /layers/<i> and rewrites /top), unpacked like a pull, in FLEX_HOME's store
(shifted into the user's range when not root). Run as the mode's user."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sys
import tarfile

from flex.runtime.base.home import Home
from flex.runtime.base.progress import NullProgress
from flex.runtime.images.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from flex.runtime.images.store import ImageStore
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.image import unpack_image
from flex.runtime.unpack.userns import store_ownership


def _layer(i: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("layers")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for name in (f"layers/{i:03d}", "top"):
            data = f"{i}\n".encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(base_ref: str, name: str, n: int) -> None:
    store = ImageStore(Home.open(), ownership=store_ownership())
    base = store.get(base_ref)
    layers = [(lay.digest, diff) for lay, diff in zip(base.manifest.layers, base.diff_ids, strict=True)]
    descs = [lay.to_json() for lay in base.manifest.layers]
    with lease(store.db) as held:
        for i in range(n):
            data = _layer(i)
            digest = store.content.put(data)
            held.add("content", digest)
            layers.append((digest, "sha256:" + hashlib.sha256(data).hexdigest()))
            descs.append({"mediaType": OCI_LAYER, "digest": digest, "size": len(data)})
        config = copy.deepcopy(base.config)
        config["rootfs"] = {"type": "layers", "diff_ids": [d for _, d in layers]}
        config.pop("history", None)
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = store.content.put(config_bytes)
        held.add("content", config_digest)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": descs,
                               "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                          "size": len(config_bytes)}}, sort_keys=True).encode()
        manifest_digest = store.content.put(manifest)
        held.add("content", manifest_digest)
        unpack_image(store, layers, held, NullProgress())
        target = store.normalize(name)
        store.set_name(target, manifest_digest, OCI_MANIFEST, manifest_digest)
    print(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
