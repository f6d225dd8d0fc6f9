"""OCI and Docker media types, and the limits flex applies to untrusted image metadata."""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG", "DOCKER_LAYER", "DOCKER_LAYER_FOREIGN", "DOCKER_LIST", "DOCKER_MANIFEST", "INDEX_TYPES",
    "LAYER_TYPES", "MANIFEST_ACCEPT", "MANIFEST_TYPES", "MAX_LAYERS", "MAX_MANIFEST_SIZE", "OCI_CONFIG",
    "OCI_INDEX", "OCI_LAYER", "OCI_LAYER_GZIP", "OCI_LAYER_ZSTD", "OCI_MANIFEST", "compression_of",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
LAYER_TYPES = frozenset({OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_FOREIGN,
                         "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"})
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

MAX_MANIFEST_SIZE = 4 * 1024 * 1024  # manifests and configs larger than this are refused (untrusted input)
MAX_LAYERS = 127


def compression_of(media_type: str) -> str:
    """"gzip", "zstd" or "" (uncompressed) for a layer media type; the content is sniffed anyway."""
    if media_type.endswith("+zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return ""
