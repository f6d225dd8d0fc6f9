"""A feature's id in devcontainer.json → where to get it, following the reference CLI's rules.

    ghcr.io/org/repo/feature:1           OCI (tag after the last "/", or @sha256:..., else "latest")
    ./feature, ../x/feature              a folder relative to devcontainer.json's folder
    https://host/devcontainer-feature-<id>.tgz   a tarball

Bare ids (``node``) and GitHub-release ids (``owner/repo/feature``) are the spec's deprecated forms; the
reference still maps a few; flex refuses them with the id to use instead.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from flex.errors import InvalidConfiguration

__all__ = ["FeatureRef", "parse_reference"]

_PATH = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_TARBALL_NAME = re.compile(r"^devcontainer-feature-(.*)\.tgz$")
_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


@dataclass(frozen=True)
class FeatureRef:
    """Where one feature comes from. ``kind`` is the reference CLI's source type name."""

    kind: str  # "oci" | "file-path" | "direct-tarball"
    user_id: str
    id: str
    registry: str = ""
    path: str = ""  # OCI repository path, e.g. devcontainers/features/node
    tag: str | None = None
    digest: str | None = None
    local_path: str = ""  # file-path: absolute folder
    url: str = ""  # direct-tarball

    @property
    def namespace(self) -> str:
        return posixpath.dirname(self.path)

    @property
    def resource(self) -> str:
        """``registry/path`` without tag or digest: what soft dependencies match on."""
        return f"{self.registry}/{self.path}"

    @property
    def version(self) -> str:
        return self.digest or self.tag or "latest"

    def oci_reference(self) -> str:
        return f"{self.resource}@{self.digest}" if self.digest else f"{self.resource}:{self.tag or 'latest'}"


def _bad(user_id: str, why: str, hint: str | None = None) -> InvalidConfiguration:
    return InvalidConfiguration(f"feature {user_id!r}: {why}", hint=hint,
                                details={"pointer": f"/features/{user_id.replace('~', '~0').replace('/', '~1')}"})


def parse_reference(user_id: str, config_dir: str | Path) -> FeatureRef:
    """Classify ``user_id`` (a key of ``features``); ``config_dir`` is the folder holding devcontainer.json."""
    if user_id.startswith(("./", "../")):
        folder = posixpath.normpath(posixpath.join(str(config_dir), user_id))
        fid = posixpath.basename(folder)
        if not fid or fid in (".", ".."):
            raise _bad(user_id, "a local feature must name a folder")
        return FeatureRef("file-path", user_id, fid, local_path=folder)
    if user_id.startswith("/"):
        raise _bad(user_id, "absolute paths are not allowed", hint="give the folder relative to devcontainer.json, "
                   "e.g. ./my-feature")
    if user_id.startswith("http://"):
        raise _bad(user_id, "a feature tarball must be fetched over https")
    if user_id.startswith("https://"):
        name = user_id.rsplit("/", 1)[-1].split("?", 1)[0]
        m = _TARBALL_NAME.match(name)
        if not m or not _ID.match(m.group(1)):
            raise _bad(user_id, "a tarball URL must end in devcontainer-feature-<id>.tgz")
        return FeatureRef("direct-tarball", user_id, m.group(1), url=user_id)
    if "/" not in user_id:
        raise _bad(user_id, "bare feature ids are deprecated and not supported",
                   hint=f"use the OCI id, e.g. ghcr.io/devcontainers/features/{user_id}:1")
    ref = user_id.lower()
    digest = tag = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise _bad(user_id, f"{digest!r} is not a sha256 digest")
    else:
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
            if not _TAG.match(tag):
                raise _bad(user_id, f"{tag!r} is not a valid tag")
    registry, _, path = ref.partition("/")
    if "." not in registry and ":" not in registry and not registry.startswith("localhost"):
        raise _bad(user_id, "GitHub-release feature ids (owner/repo/feature) are deprecated and not supported",
                   hint=f"publish the feature to an OCI registry and use e.g. ghcr.io/{ref}:1")
    if not path or not _PATH.match(path):
        raise _bad(user_id, f"{path!r} is not a valid OCI repository path")
    if path.startswith("devcontainers-contrib/"):  # the collection moved; the reference rewrites it too
        path = "devcontainers-extra/" + path.removeprefix("devcontainers-contrib/")
    return FeatureRef("oci", user_id, posixpath.basename(path), registry=registry, path=path,
                      tag=tag if digest is None else None, digest=digest)
