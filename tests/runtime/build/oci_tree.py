"""An image in a registry → the root filesystem and config a user of it gets, as plain data to compare.

Layers are applied in order the way the OCI image spec says (``.wh.`` whiteouts, ``.wh..wh..opq``
opaque directories); each entry is described by type, mode, owner, link target, content hash and
xattrs (mtimes left out: two builds at two times differ there by nature).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
from typing import Any

import httpx

ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def _blob(host: str, repo: str, digest: str) -> bytes:
    r = httpx.get(f"http://{host}/v2/{repo}/blobs/{digest}", follow_redirects=True, timeout=60)
    r.raise_for_status()
    return r.content


def _uncompressed(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def fetch(host: str, ref: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]:
    """(tree, config, layer media types) of ``repo:tag`` on ``host``."""
    repo, _, tag = ref.removeprefix(host + "/").rpartition(":")
    r = httpx.get(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30)
    r.raise_for_status()
    manifest = r.json()
    config = json.loads(_blob(host, repo, manifest["config"]["digest"]))
    tree: dict[str, dict[str, Any]] = {}
    for layer in manifest["layers"]:
        apply(tree, _uncompressed(_blob(host, repo, layer["digest"])))
    return tree, config, [lay["mediaType"] for lay in manifest["layers"]]


def apply(tree: dict[str, dict[str, Any]], tar_bytes: bytes) -> None:
    links: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as t:
        for m in t:
            name = posixpath.normpath(m.name.lstrip("./").rstrip("/") or ".")
            if name == ".":
                continue
            parent, base = posixpath.split(name)
            if base == ".wh..wh..opq":
                for k in [k for k in tree if k.startswith(parent + "/") or not parent]:
                    del tree[k]
                continue
            if base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                for k in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                    del tree[k]
                continue
            if name in tree and tree[name]["type"] == "dir" and m.isdir():
                pass  # a directory entry over a directory keeps what is below it
            elif name in tree:
                for k in [k for k in tree if k.startswith(name + "/")]:
                    del tree[k]
            # permission bits only: Go's archive/tar (buildah) also writes the type bits into the mode field
            entry: dict[str, Any] = {"mode": oct(m.mode & 0o7777), "uid": m.uid, "gid": m.gid}
            xattrs = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if xattrs:
                entry["xattrs"] = xattrs
            if m.isdir():
                entry["type"] = "dir"
            elif m.issym():
                entry["type"], entry["target"] = "symlink", m.linkname
            elif m.islnk():
                target = posixpath.normpath(m.linkname.lstrip("./"))
                entry = dict(tree.get(target, {"type": "hardlink"}))
                links[name] = target
            elif m.isreg():
                f = t.extractfile(m)
                entry["type"] = "file"
                entry["sha256"] = hashlib.sha256(f.read() if f else b"").hexdigest()
            elif m.isfifo():
                entry["type"] = "fifo"
            elif m.ischr() or m.isblk():
                entry["type"] = f"{'chr' if m.ischr() else 'blk'}:{m.devmajor}:{m.devminor}"
            tree[name] = entry


def config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The image config fields a container user sees, empty values dropped (Docker's format writes
    every field; OCI's leaves the empty ones out)."""
    c = config.get("config") or {}
    keep = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels", "StopSignal",
            "Healthcheck", "Shell", "OnBuild")
    out = {k: c[k] for k in keep if c.get(k) not in (None, "", [], {})}
    labels = {k: v for k, v in (out.get("Labels") or {}).items() if k != "io.buildah.version"}
    if labels:
        out["Labels"] = labels
    else:
        out.pop("Labels", None)
    out["os"], out["architecture"] = config.get("os"), config.get("architecture")
    if config.get("author"):
        out["author"] = config["author"]
    return out
