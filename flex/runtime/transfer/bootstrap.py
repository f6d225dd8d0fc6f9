"""Offline base images: a Debian root filesystem from mmdebstrap, stored as a single-layer OCI image.

mmdebstrap runs with the host's apt configuration and writes a tar; the tar is the layer's diff
(diff_id = its sha256), compressed with gzip with a zero header mtime, so the same tar always gives the
same blobs. The config carries PATH and Cmd ["/bin/bash"]; ``created`` comes from SOURCE_DATE_EPOCH
(default 0). The image is then unpacked and named like a pulled one, under a lease.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from flex.errors import FailedPrecondition, FlexError, InvalidArgument
from flex.runtime.base.progress import NullProgress, Progress
from flex.runtime.images.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from flex.runtime.images.store import Image, ImageStore, host_platform
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.image import unpack_image

__all__ = ["DEFAULT_PATH", "bootstrap", "image_from_rootfs_tar", "run_mmdebstrap"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class _Hashing:
    """A write-only file that hashes what goes through it (the compressed layer's digest)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


# mmdebstrap(1)'s variants ("-" is debootstrap's synonym, left out)
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap",
             "standard")


def run_mmdebstrap(out: Path, *, suite: str, variant: str, include: Sequence[str]) -> None:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise FailedPrecondition("mmdebstrap is not installed", hint="apt-get install mmdebstrap")
    cmd = [exe, "--quiet", f"--variant={variant}", "--mode=auto", "--format=tar"]
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [suite, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FlexError(f"mmdebstrap {suite} failed: {tail}", hint="check the host's apt configuration")


def image_from_rootfs_tar(store: ImageStore, tar: Path, name: str, *, progress: Progress | None = None,
                          history: str = "flex image bootstrap") -> Image:
    """Store the uncompressed root filesystem ``tar`` as a single-layer image named ``name``."""
    progress = progress or NullProgress()
    target_name = store.normalize(name)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    with lease(store.db) as held:
        diff = hashlib.sha256()
        progress.step(f"compressing {tar.name}")
        fd, tmp = tempfile.mkstemp(prefix="layer-", dir=store.home.tmp)
        try:
            with os.fdopen(fd, "wb") as raw, open(tar, "rb") as src:
                hashed = _Hashing(raw)
                with gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
                    while chunk := src.read(1 << 20):
                        diff.update(chunk)
                        gz.write(chunk)
            layer_digest = "sha256:" + hashed.sha256.hexdigest()
            held.add("content", layer_digest)  # before the blob exists: a prune meanwhile must not take it
            with open(tmp, "rb") as f:
                store.content.ingest(iter(lambda: f.read(1 << 20), b""), layer_digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        diff_id = "sha256:" + diff.hexdigest()
        plat = host_platform()
        config = {
            "created": created,
            "architecture": plat["architecture"],
            "os": "linux",
            "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["/bin/bash"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": history}],
        }
        if "variant" in plat:
            config["variant"] = plat["variant"]
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        held.add("content", config_digest)
        store.content.put(config_bytes, config_digest)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest,
                        "size": store.content.size(layer_digest)}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        held.add("content", manifest_digest)
        store.content.put(manifest_bytes, manifest_digest)
        progress.step(f"unpacking {layer_digest}")
        unpack_image(store, [(layer_digest, diff_id)], held, progress)
        store.set_name(target_name, manifest_digest, OCI_MANIFEST, manifest_digest)
    return store.get(target_name)


def bootstrap(store: ImageStore, name: str, *, suite: str = "bookworm", variant: str = "minbase",
              include: Sequence[str] = (), progress: Progress | None = None) -> Image:
    progress = progress or NullProgress()
    store.normalize(name)  # a bad name is refused now, not after the build
    if variant not in _VARIANTS:
        raise InvalidArgument(f"--variant {variant!r}: not an mmdebstrap variant",
                              hint=f"one of {', '.join(_VARIANTS)}")
    for pkg in include:
        if not pkg or any(c in pkg for c in " ,/\\'\"") or pkg.startswith("-"):
            raise InvalidArgument(f"--include: {pkg!r} is not a package name")
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=store.home.tmp) as d:
        out = Path(d) / "rootfs.tar"
        progress.step(f"mmdebstrap {suite} ({variant}{', ' + ','.join(include) if include else ''})")
        run_mmdebstrap(out, suite=suite, variant=variant, include=include)
        history = f"flex image bootstrap --suite {suite} --variant {variant}" + \
            (f" --include {','.join(include)}" if include else "")
        return image_from_rootfs_tar(store, out, name, progress=progress, history=history)
