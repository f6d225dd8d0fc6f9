"""OCI image layout archives (what `skopeo copy … oci-archive:` writes): import and export.

Export writes ``oci-layout``, ``index.json`` (the manifest annotated with its name) and
``blobs/sha256/…`` into a temp file next to the destination, then renames it (or to a stream: stdout). Import treats the
archive as untrusted: only those three kinds of regular files are read, every blob is streamed into
the content store and verified against its name; nothing is extracted to disk.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import BinaryIO

from flex.atomic import atomic_file
from flex.errors import InvalidArgument, NotFound, PermissionDenied
from flex.runtime.base.progress import NullProgress, Progress
from flex.runtime.images.mediatypes import INDEX_TYPES, MAX_MANIFEST_SIZE, OCI_INDEX
from flex.runtime.images.store import (
    Image,
    ImageStore,
    media_type_of,
    parse_config,
    parse_manifest,
    select_platform,
)
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.image import unpack_image

__all__ = ["export_image", "import_image"]

_BLOB = re.compile(r"^(?:\./)?blobs/(sha256)/([a-f0-9]{64})$")
_REF_NAME = "org.opencontainers.image.ref.name"


def _add(tf: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.mtime = 0
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    elif path is not None:
        info.size = path.stat().st_size
        with open(path, "rb") as f:
            tf.addfile(info, f)


def export_image(store: ImageStore, name: str, dest: Path | BinaryIO) -> Image:
    """Write image ``name`` as an OCI layout archive to the file ``dest`` (atomically) or to a stream."""
    image = store.get(name)
    if not isinstance(dest, Path):
        _write_archive(store, image, dest)
        return image
    dest = dest.resolve()
    if dest.is_dir():
        raise InvalidArgument(f"{dest} is a folder", hint=f"give a file name, e.g. {dest / 'image.tar'}")
    if not dest.parent.is_dir():
        raise NotFound(f"cannot write {dest}: the folder {dest.parent} does not exist", hint="create it first")
    try:
        with atomic_file(dest) as raw:
            _write_archive(store, image, raw)
    except PermissionError as err:
        raise PermissionDenied(f"cannot write {dest}: {err.strerror}") from None
    return image


def _write_archive(store: ImageStore, image: Image, out: BinaryIO) -> None:
    tag = image.name.rsplit(":", 1)[-1] if "@" not in image.name else None
    desc = {"mediaType": image.manifest.media_type, "digest": image.manifest_digest,
            "size": store.content.size(image.manifest_digest),
            "annotations": {_REF_NAME: tag or "latest", "io.containerd.image.name": image.name}}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]}).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(tf, "index.json", index)
        for digest in [image.manifest_digest, image.manifest.config.digest,
                       *(lay.digest for lay in image.manifest.layers)]:
            _add(tf, "blobs/" + digest.replace(":", "/"), path=store.content.path(digest))


def import_image(store: ImageStore, src: Path, name: str, *, progress: Progress | None = None) -> Image:
    progress = progress or NullProgress()
    target_name = store.normalize(name)
    if not src.is_file():
        raise NotFound(f"{src}: no such file")
    index_data: bytes | None = None
    with lease(store.db) as held:
        try:
            with tarfile.open(src, mode="r|*") as tf:
                for m in tf:
                    if not m.isreg():
                        continue
                    mname = m.name.removeprefix("./")
                    f = tf.extractfile(m)
                    if f is None:
                        continue
                    if mname == "index.json":
                        if m.size > MAX_MANIFEST_SIZE:
                            raise InvalidArgument(f"{src}: index.json over {MAX_MANIFEST_SIZE} bytes")
                        index_data = f.read()
                        continue
                    match = _BLOB.match(mname)
                    if not match:
                        continue
                    digest = f"{match.group(1)}:{match.group(2)}"
                    held.add("content", digest)
                    if not store.content.exists(digest):
                        store.content.ingest(iter(lambda f=f: f.read(1 << 20), b""), digest, m.size)  # type: ignore[misc]
        except tarfile.TarError as err:
            raise InvalidArgument(f"{src}: not an OCI layout archive ({err})") from err
        if index_data is None:
            raise InvalidArgument(f"{src}: no index.json; not an OCI layout archive")
        index = json.loads(index_data)
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise InvalidArgument(f"{src}: index.json lists no manifests")
        digest = str(manifests[0].get("digest", ""))
        if not store.content.exists(digest):
            raise InvalidArgument(f"{src}: manifest {digest} is missing from the archive")
        data = store.content.read(digest, max_size=MAX_MANIFEST_SIZE)
        target, target_type = digest, media_type_of(data, str(manifests[0].get("mediaType", "")))
        if target_type in INDEX_TYPES:
            desc = select_platform(data, str(src))
            digest = desc.digest
            data = store.content.read(digest, max_size=MAX_MANIFEST_SIZE)
        manifest = parse_manifest(data, str(src))
        config = parse_config(store.content.read(manifest.config.digest, max_size=MAX_MANIFEST_SIZE), manifest,
                              str(src))
        for lay in manifest.layers:
            if not store.content.exists(lay.digest):
                raise InvalidArgument(f"{src}: layer {lay.digest} is missing from the archive")
        diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        unpack_image(store, [(lay.digest, d) for lay, d in zip(manifest.layers, diff_ids, strict=True)], held,
                     progress)
        store.set_name(target_name, target, target_type, digest)
    return store.get(target_name)
