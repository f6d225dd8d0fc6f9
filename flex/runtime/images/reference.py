"""Image references, normalised as Docker does.

``debian`` → ``docker.io/library/debian:latest``; ``ghcr.io/o/r:tag``; ``127.0.0.1:5000/repo@sha256:...``.
The first path component is a registry host when it contains a dot or a colon or is ``localhost``.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from flex.errors import InvalidArgument

__all__ = ["DEFAULT_REGISTRY", "Reference", "is_insecure_registry", "parse_reference"]

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HOST = re.compile(r"^(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry == DEFAULT_REGISTRY else self.registry

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``; raises InvalidArgument saying what is wrong."""
    ref = text.strip()
    if not ref:
        raise InvalidArgument("empty image reference")
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidArgument(f"invalid digest in image reference {text!r}",
                                  hint="expected NAME@sha256:<64 hex digits>")
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidArgument(f"invalid tag {tag!r} in image reference {text!r}")
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
        if not _HOST.match(registry):
            raise InvalidArgument(f"invalid registry host {registry!r} in image reference {text!r}")
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for comp in path:
        if not _COMPONENT.match(comp):
            raise InvalidArgument(f"invalid repository name {'/'.join(path)!r} in image reference {text!r}",
                                  hint="repository names are lowercase letters, digits and . _ - separators")
    repository = "/".join(path)
    if len(repository) > 255:
        raise InvalidArgument(f"repository name too long in image reference {text!r}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def is_insecure_registry(host: str) -> bool:
    """Plain HTTP is allowed for loopback registries (as Docker does) and for FLEX_INSECURE_REGISTRIES
    (comma-separated host[:port] entries)."""
    listed = {h.strip() for h in os.environ.get("FLEX_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    if host in listed:
        return True
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    hostname = hostname.strip("[]")
    if hostname in listed or hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
