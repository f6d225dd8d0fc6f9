"""Publishing a Dev Container Feature to a registry the way `devcontainer features publish` lays it out
(spec: devcontainer-features-distribution.md): a plain tar of the folder (entries "./..."), as the one
layer ``application/vnd.devcontainers.layer.v1+tar``, config ``application/vnd.devcontainers``, the
metadata in the ``dev.containers.metadata`` annotation."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from flex.runtime.remotes.registry import Registry, RegistryClient


def feature_tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname="./" + path.relative_to(folder).as_posix(), recursive=False)
    return buf.getvalue()


def publish_feature(host: str, repo: str, tags: list[str], folder: Path) -> str:
    """Push ``folder`` as ``host/repo:tag`` for each tag; returns the manifest digest."""
    layer = feature_tar(folder)
    meta = json.loads((folder / "devcontainer-feature.json").read_text())
    config = b"{}"
    ldigest = "sha256:" + hashlib.sha256(layer).hexdigest()
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.devcontainers", "digest": cdigest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.devcontainers.layer.v1+tar", "digest": ldigest,
                    "size": len(layer), "annotations": {
                        "org.opencontainers.image.title": f"devcontainer-feature-{meta['id']}.tgz"}}],
        "annotations": {"dev.containers.metadata": json.dumps(meta), "com.github.package.type":
                        "devcontainer_feature"},
    }).encode()
    with Registry(host) as reg:
        client = RegistryClient(reg, repo)
        client.push_blob(ldigest, len(layer), lambda: io.BytesIO(layer))
        client.push_blob(cdigest, len(config), lambda: io.BytesIO(config))
        digest = ""
        for tag in tags:
            digest = client.put_manifest(tag, manifest, "application/vnd.oci.image.manifest.v1+json")
    return digest
