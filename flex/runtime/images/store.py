"""The image store: names → manifests in the content store, descriptor walking, platform selection.

An image record (component "images") maps a normalised name (``127.0.0.1:5000/app:1``) to its target
(the index or manifest digest the name resolved to) and the platform manifest chosen for this host. A
record is written only once every blob is in the content store and every layer is a committed
snapshot, so a listed image is always complete. Manifests and configs are untrusted: size-limited,
validated, at most 127 layers. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flex.errors import InvalidArgument, NotFound
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.content.store import ContentStore, check_digest
from flex.runtime.images.mediatypes import (
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    MAX_LAYERS,
    MAX_MANIFEST_SIZE,
)
from flex.runtime.images.reference import parse_reference
from flex.runtime.snapshots.base import DirectorySnapshotter
from flex.runtime.snapshots.overlay import OverlaySnapshotter

__all__ = ["Descriptor", "Image", "ImageStore", "Manifest", "chain_ids", "host_platform", "media_type_of",
           "parse_config", "parse_manifest", "parse_platform", "platform_text", "select_platform"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS images (
        name TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        target_type TEXT NOT NULL,
        manifest TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS images_manifest ON images(manifest)",
]


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def parse(cls, obj: Any, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{where}: descriptor is not an object")
        try:
            digest = check_digest(str(obj["digest"]))
            size = int(obj["size"])
            media_type = str(obj.get("mediaType", ""))
        except (KeyError, ValueError, TypeError) as err:
            raise InvalidArgument(f"{where}: malformed descriptor ({err})") from err
        if size < 0:
            raise InvalidArgument(f"{where}: negative size")
        plat = obj.get("platform")
        return cls(media_type, digest, size, plat if isinstance(plat, dict) else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


def media_type_of(data: bytes, header_type: str = "") -> str:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"manifest is not valid JSON: {err}") from err
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(mt, str) and mt:
        return mt
    if header_type in INDEX_TYPES | MANIFEST_TYPES:
        return header_type
    if isinstance(obj, dict) and "manifests" in obj:
        return "application/vnd.oci.image.index.v1+json"
    return "application/vnd.oci.image.manifest.v1+json"


def parse_manifest(data: bytes, where: str) -> Manifest:
    if len(data) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{where}: manifest over {MAX_MANIFEST_SIZE} bytes refused")
    obj = json.loads(data)
    if not isinstance(obj, dict) or obj.get("schemaVersion") != 2:
        raise InvalidArgument(f"{where}: not a schema 2 image manifest")
    config = Descriptor.parse(obj.get("config"), f"{where} config")
    layers_raw = obj.get("layers")
    if not isinstance(layers_raw, list):
        raise InvalidArgument(f"{where}: manifest has no layers list")
    if len(layers_raw) > MAX_LAYERS:
        raise InvalidArgument(f"{where}: {len(layers_raw)} layers; flex refuses more than {MAX_LAYERS}")
    layers = [Descriptor.parse(lay, f"{where} layer {i}") for i, lay in enumerate(layers_raw)]
    for i, lay in enumerate(layers):
        if lay.media_type and lay.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"{where}: layer {i} has unsupported media type {lay.media_type!r}")
    if config.size > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{where}: config of {config.size} bytes refused (limit {MAX_MANIFEST_SIZE})")
    return Manifest(media_type_of(data), config, layers)


def parse_config(data: bytes, manifest: Manifest, where: str) -> dict[str, Any]:
    try:
        cfg = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"{where}: image config is not valid JSON") from err
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"{where}: image config is not an object")
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"{where}: config lists {len(diff_ids or [])} diff_ids for "
                              f"{len(manifest.layers)} layers")
    for d in diff_ids:
        check_digest(str(d))
    return cfg


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
                 "armv7l": "arm", "i386": "386", "i686": "386"}
_PLATFORM_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


def _with_default_variant(out: dict[str, str]) -> dict[str, str]:
    # as containerd normalises: arm64 means v8, arm means v7
    if out["architecture"] == "arm64":
        out.setdefault("variant", "v8")
    elif out["architecture"] == "arm":
        out.setdefault("variant", "v7")
    return out


def host_platform() -> dict[str, str]:
    machine = platform.machine().lower()
    return _with_default_variant({"os": "linux", "architecture": _ARCH_ALIASES.get(machine, machine)})


def parse_platform(text: str) -> dict[str, str]:
    """``os/arch[/variant]`` (``linux/arm64``, ``linux/arm/v6``; ``x86_64``, ``aarch64`` accepted) → a
    platform as in an index."""
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART.match(p) for p in parts):
        raise InvalidArgument(f"invalid platform {text!r}", hint="expected OS/ARCH[/VARIANT], e.g. linux/arm64")
    out = {"os": parts[0], "architecture": _ARCH_ALIASES.get(parts[1], parts[1])}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return _with_default_variant(out)


def platform_text(plat: dict[str, Any]) -> str:
    out = f"{plat.get('os')}/{plat.get('architecture')}"
    return f"{out}/{plat['variant']}" if plat.get("variant") else out


def select_platform(index_data: bytes, where: str, want: dict[str, str] | None = None) -> Descriptor:
    obj = json.loads(index_data)
    manifests = obj.get("manifests") if isinstance(obj, dict) else None
    if not isinstance(manifests, list):
        raise InvalidArgument(f"{where}: index has no manifests list")
    want = want or host_platform()
    best: tuple[int, Descriptor] | None = None
    for i, raw in enumerate(manifests[:1024]):
        desc = Descriptor.parse(raw, f"{where} manifests[{i}]")
        plat = desc.platform or {}
        if plat.get("os") != want["os"] or plat.get("architecture") != want["architecture"]:
            continue
        variant, wanted = str(plat.get("variant") or ""), want.get("variant", "")
        if want["architecture"] == "arm" and variant[1:].isdigit() and wanted[1:].isdigit() \
                and int(variant[1:]) > int(wanted[1:]):
            continue  # an armv7 image does not run on armv6; the reverse works (as containerd matches)
        score = 2 if variant in ("", wanted) else 1
        if best is None or score > best[0]:
            best = (score, desc)
    if best is None:
        seen = sorted({f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
                       for m in manifests if isinstance(m, dict)})
        raise NotFound(f"{where}: no image for {platform_text(want)} (has {', '.join(seen)})",
                       hint="choose one of those with --platform")
    return best[1]


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain id of each layer: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class Image:
    name: str
    target: str
    target_type: str
    manifest_digest: str
    manifest: Manifest
    config: dict[str, Any]
    created: float

    @property
    def diff_ids(self) -> list[str]:
        return [str(d) for d in self.config["rootfs"]["diff_ids"]]

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)

    @property
    def top_snapshot(self) -> str | None:
        ids = self.chain_ids
        return ids[-1] if ids else None

    @property
    def size(self) -> int:
        return self.manifest.config.size + sum(lay.size for lay in self.manifest.layers)


class ImageStore:
    """Names, content and snapshots of one FLEX_HOME."""

    def __init__(self, home: Home, *, ownership: str = "unshifted", snapshots: DirectorySnapshotter | None = None):
        """``snapshots`` defaults to the overlay snapshotter of ``home`` (sharing its database)."""
        self.home = home
        self.db = MetadataDB(home.db_path)
        self.db.ensure_schema("images", 1, _SCHEMA)
        self.content = ContentStore(home.sub("content"), home.tmp)
        self.snapshots: DirectorySnapshotter = snapshots if snapshots is not None else \
            OverlaySnapshotter(home.sub("snapshots"), self.db, ownership=ownership)

    @staticmethod
    def normalize(name: str) -> str:
        return str(parse_reference(name))

    def load(self, name: str, target: str, target_type: str, manifest_digest: str, created: float) -> Image:
        where = f"image {name}"
        manifest = parse_manifest(self.content.read(manifest_digest, max_size=MAX_MANIFEST_SIZE), where)
        config = parse_config(self.content.read(manifest.config.digest, max_size=MAX_MANIFEST_SIZE), manifest,
                              where)
        return Image(name, target, target_type, manifest_digest, manifest, config, created)

    def _from_row(self, row: Any) -> Image:
        return self.load(row["name"], row["target"], row["target_type"], row["manifest"], row["created"])

    def get(self, ref: str) -> Image:
        """By name (normalised as Docker does) or by digest / digest prefix of the manifest or target."""
        rows = []
        text = ref.strip()
        bare = text.removeprefix("sha256:")
        if bare and all(c in "0123456789abcdef" for c in bare) and len(bare) >= 6:
            rows = self.db.query("SELECT * FROM images WHERE manifest LIKE ? OR target LIKE ?",
                                 (f"sha256:{bare}%", f"sha256:{bare}%"))
        if not rows:
            try:
                name = self.normalize(text)
            except InvalidArgument:
                # a name no image can have: the same error `pull` gives (exit 7), not "not found"
                if not (rows := self.db.query("SELECT * FROM images WHERE name = ?", (text,))):
                    raise
            else:
                rows = self.db.query("SELECT * FROM images WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"image {ref!r} not found", hint="see `flex image ls`, or `flex image pull` it")
        return self._from_row(rows[0])

    def list(self) -> builtins.list[Image]:
        out = []
        for row in self.db.query("SELECT * FROM images ORDER BY name"):
            try:
                out.append(self._from_row(row))
            except (NotFound, InvalidArgument):
                continue  # content removed under us; GC will drop the name
        return out

    def set_name(self, name: str, target: str, target_type: str, manifest_digest: str) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO images (name, target, target_type, manifest, created, updated) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET target=excluded.target, target_type=excluded.target_type, "
                "manifest=excluded.manifest, updated=excluded.updated",
                (name, target, target_type, manifest_digest, now, now))

    def remove(self, ref: str) -> str:
        img = self.get(ref)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM images WHERE name = ?", (img.name,))
        return img.name

    def lowers(self, ref: str) -> builtins.list[str]:
        """The image's layer directories, top first (what a container's overlay uses)."""
        top = self.get(ref).top_snapshot
        return [str(p) for p in self.snapshots.lowers(top)] if top else []

