"""Fetching Dev Container Features: OCI artifacts through the runtime's registry client (and its
credentials), https tarballs, local folders; cached on this machine by digest so a build works offline
once its features were fetched (the reference re-downloads every feature on every build).

    FLEX_HOME/cache/features/
      sha256/<hex>/            a feature's files, extracted once (OCI: by layer digest; https: by tarball
                               digest), renamed into place whole: never half there
      refs/<sha256 of ref>.json  {"digest", "manifest", "layer"}: a tag's last resolution (used offline)

A locked feature (devcontainer-lock.json) is fetched by digest; a digest already in the cache needs no
network at all. Feature files are untrusted: tarballs are extracted with the "data" filter (no absolute
paths, no "..", no links out, no devices), within size limits; a local feature must stay inside the
workspace folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flex.atomic import write_atomic
from flex.devcontainer.features.metadata import FEATURE_FILE, parse_feature_json
from flex.devcontainer.features.order import Resolved
from flex.devcontainer.features.reference import FeatureRef
from flex.errors import FlexError, InvalidConfiguration, NotFound, Unavailable
from flex.runtime.remotes.registry import Registry, RegistryClient

__all__ = ["FEATURE_CONFIG_MEDIA_TYPE", "FEATURE_LAYER_MEDIA_TYPE", "FeatureFetcher", "folder_digest"]

FEATURE_CONFIG_MEDIA_TYPE = "application/vnd.devcontainers"
FEATURE_LAYER_MEDIA_TYPE = "application/vnd.devcontainers.layer.v1+tar"
MAX_FEATURE_TARBALL = 256 << 20
MAX_FEATURE_FILES = 10_000


def folder_digest(folder: Path) -> str:
    """sha256 over a local feature's names, modes and contents: its identity in caches and ordering."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(folder).as_posix()
            st = p.lstat()
            h.update(f"{rel}\0{st.st_mode & 0o7777 | (st.st_mode & 0o170000)}\0".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            h.update(b"\0")
    return "sha256:" + h.hexdigest()


def _read_feature_json(folder: Path, shown: str) -> dict[str, Any]:
    path = folder / FEATURE_FILE
    if path.is_symlink() or not path.is_file():
        raise InvalidConfiguration(f"{shown}: no {FEATURE_FILE} (not a Dev Container Feature, or a v1 "
                                   "feature, which flex does not support)", details={"file": shown})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidConfiguration(f"{shown}: cannot be read: {err}", details={"file": shown}) from err
    return parse_feature_json(text, shown)


class FeatureFetcher:
    """Resolve feature references to their files on this machine, through the cache."""

    def __init__(self, cache_dir: Path, *, workspace_folder: str | None = None,
                 lock: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.cache = cache_dir
        self.workspace = os.path.realpath(workspace_folder) if workspace_folder else None
        self.lock = lock or {}
        self.progress = progress or (lambda _line: None)
        self._transport = transport
        self._registries: dict[str, Registry] = {}

    def close(self) -> None:
        for reg in self._registries.values():
            reg.close()
        self._registries.clear()

    def __enter__(self) -> FeatureFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, ref: FeatureRef) -> Resolved:
        return self.resolve(ref)

    def resolve(self, ref: FeatureRef) -> Resolved:
        if ref.kind == "file-path":
            return self._local(ref)
        if ref.kind == "direct-tarball":
            return self._tarball(ref)
        return self._oci(ref)

    # -- local folders ------------------------------------------------------------------------------
    def _local(self, ref: FeatureRef) -> Resolved:
        folder = Path(ref.local_path)
        real = os.path.realpath(folder)
        if self.workspace is not None and os.path.commonpath([real, self.workspace]) != self.workspace:
            raise InvalidConfiguration(f"feature {ref.user_id!r}: {folder} is outside the workspace folder",
                                       hint="keep local features inside the workspace (e.g. in .devcontainer/)")
        if not folder.is_dir():
            raise NotFound(f"feature {ref.user_id!r}: {folder} is not a folder",
                           hint="a local feature is a folder holding devcontainer-feature.json and install.sh")
        meta = _read_feature_json(folder, str(folder / FEATURE_FILE))
        return Resolved(meta, folder_digest(folder), str(folder))

    # -- cache ------------------------------------------------------------------------------------
    def _cached(self, digest: str) -> Path | None:
        path = self.cache / "sha256" / digest.removeprefix("sha256:")
        return path if path.is_dir() else None

    def _extract(self, data_file: Path, digest: str, shown: str) -> Path:
        """Unpack a feature tarball (plain or gzip) into the cache under its digest."""
        dest = self.cache / "sha256" / digest.removeprefix("sha256:")
        if dest.is_dir():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="new-", dir=dest.parent))
        try:
            try:
                with tarfile.open(data_file, "r:*") as tar:
                    members = tar.getmembers()
                    if len(members) > MAX_FEATURE_FILES:
                        raise InvalidConfiguration(f"{shown}: more than {MAX_FEATURE_FILES} files")
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as err:
                raise InvalidConfiguration(f"{shown}: not a valid feature tarball: {err}",
                                           details={"file": shown}) from err
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, dest)
            except OSError:  # another build put it there first: theirs is the same content
                if not dest.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def _ref_file(self, key: str) -> Path:
        return self.cache / "refs" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def _remember(self, key: str, record: dict[str, Any]) -> None:
        path = self._ref_file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record), durable=False)

    # -- https tarballs ---------------------------------------------------------------------------
    def _tarball(self, ref: FeatureRef) -> Resolved:
        entry = self.lock.get("features", {}).get(ref.user_id) or {}
        integrity = entry.get("integrity") if isinstance(entry, dict) else None
        known = integrity or _read_json(self._ref_file(ref.url)).get("digest")
        if known and (folder := self._cached(known)) is not None:
            return Resolved(_read_feature_json(folder, f"{ref.url}: {FEATURE_FILE}"), known, str(folder))
        self.progress(f"fetching feature {ref.url}")
        headers = {"User-Agent": "flex/0.1"}
        token = os.environ.get("GITHUB_TOKEN")
        if token and ref.url.startswith(("https://github.com/", "https://api.github.com/")):
            headers["Authorization"] = f"Bearer {token}"
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.cache, prefix="tmp-") as tmp:
            h = hashlib.sha256()
            try:
                with httpx.Client(transport=self._transport, follow_redirects=True, timeout=60) as client, \
                        client.stream("GET", ref.url, headers=headers) as resp:
                    if resp.status_code != 200:
                        raise (NotFound if resp.status_code == 404 else FlexError)(
                            f"feature {ref.user_id!r}: GET {ref.url}: HTTP {resp.status_code}")
                    size = 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > MAX_FEATURE_TARBALL:
                            raise InvalidConfiguration(f"feature {ref.user_id!r}: larger than "
                                                       f"{MAX_FEATURE_TARBALL >> 20} MiB")
                        h.update(chunk)
                        tmp.write(chunk)
            except httpx.HTTPError as err:
                raise Unavailable(f"feature {ref.user_id!r}: cannot fetch {ref.url}: {err}",
                                  hint="check the URL and the network; once fetched, a feature is cached") from err
            tmp.flush()
            digest = "sha256:" + h.hexdigest()
            if integrity and integrity != digest:
                raise InvalidConfiguration(f"feature {ref.user_id!r}: {ref.url} has digest {digest}, but "
                                           f"devcontainer-lock.json says {integrity}",
                                           hint="if the change is expected, delete its entry from the lockfile")
            folder = self._extract(Path(tmp.name), digest, ref.url)
        self._remember(ref.url, {"digest": digest})
        return Resolved(_read_feature_json(folder, f"{ref.url}: {FEATURE_FILE}"), digest, str(folder))

    # -- OCI --------------------------------------------------------------------------------------
    def _registry(self, host: str) -> Registry:
        if host not in self._registries:
            self._registries[host] = Registry(host, transport=self._transport, retries=1)
        return self._registries[host]

    def _oci(self, ref: FeatureRef) -> Resolved:
        entry = self.lock.get("features", {}).get(ref.user_id)
        pinned = ref.digest
        if pinned is None and isinstance(entry, dict) and isinstance(entry.get("resolved"), str) \
                and "@" in entry["resolved"] and entry["resolved"].split("@", 1)[0] == ref.resource:
            pinned = entry["resolved"].split("@", 1)[1]
        key = ref.resource + ("@" + pinned if pinned else ":" + (ref.tag or "latest"))
        remembered = _read_json(self._ref_file(key))
        if pinned and remembered.get("digest") == pinned and (folder := self._cached(remembered["layer"])):
            return self._resolved_oci(ref, remembered, folder)
        try:
            manifest_data, _media, digest = RegistryClient(self._registry(ref.registry), ref.path).get_manifest(
                pinned or ref.tag or "latest")
        except Unavailable:
            folder = self._cached(remembered["layer"]) if remembered else None
            if folder is None:
                raise
            self.progress(f"{ref.oci_reference()}: registry unreachable; using the cached copy")
            return self._resolved_oci(ref, remembered, folder)
        except NotFound as err:
            raise NotFound(f"feature {ref.user_id!r}: {err.message}",
                           hint="check the feature's id and version, and `flex image login` for private ones") \
                from err
        shown = f"{ref.oci_reference()}"
        manifest = _parse_manifest(manifest_data, shown)
        layer = manifest["layers"][0]
        layer_digest = layer["digest"]
        folder = self._cached(layer_digest)
        if folder is None:
            self.progress(f"fetching feature {shown}")
            folder = self._fetch_layer(ref, layer_digest, int(layer.get("size", 0)), shown)
        record = {"digest": digest, "manifest": manifest, "layer": layer_digest}
        self._remember(key, record)
        if not pinned:
            self._remember(ref.resource + "@" + digest, record)
        return self._resolved_oci(ref, record, folder)

    def _resolved_oci(self, ref: FeatureRef, record: dict[str, Any], folder: Path) -> Resolved:
        meta = _read_feature_json(folder, f"{ref.oci_reference()}: {FEATURE_FILE}")
        return Resolved(meta, record["digest"], str(folder), manifest=record["manifest"])

    def _fetch_layer(self, ref: FeatureRef, digest: str, size: int, shown: str) -> Path:
        if size > MAX_FEATURE_TARBALL:
            raise InvalidConfiguration(f"{shown}: layer larger than {MAX_FEATURE_TARBALL >> 20} MiB")
        reg = self._registry(ref.registry)
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.cache, prefix="tmp-") as tmp:
            h = hashlib.sha256()
            resp = reg.request("GET", f"/v2/{ref.path}/blobs/{digest}", scope=f"repository:{ref.path}:pull",
                               stream=True, what=f"blob {ref.path}@{digest}")
            try:
                got = 0
                for chunk in resp.iter_bytes():
                    got += len(chunk)
                    if got > MAX_FEATURE_TARBALL:
                        raise InvalidConfiguration(f"{shown}: layer larger than {MAX_FEATURE_TARBALL >> 20} MiB")
                    h.update(chunk)
                    tmp.write(chunk)
            finally:
                resp.close()
            if "sha256:" + h.hexdigest() != digest:
                raise Unavailable(f"{shown}: layer {digest} arrived with another digest", hint="try again")
            tmp.flush()
            return self._extract(Path(tmp.name), digest, shown)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parse_manifest(data: bytes, shown: str) -> dict[str, Any]:
    try:
        manifest = json.load(io.BytesIO(data))
    except ValueError as err:
        raise InvalidConfiguration(f"{shown}: the manifest is not JSON") from err
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or config.get("mediaType") != FEATURE_CONFIG_MEDIA_TYPE:
        got = config.get("mediaType") if isinstance(config, dict) else None
        raise InvalidConfiguration(f"{shown}: not a Dev Container Feature (config mediaType {got!r}, expected "
                                   f"{FEATURE_CONFIG_MEDIA_TYPE!r})", details={"file": shown,
                                                                               "pointer": "/config/mediaType"})
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict) \
            or not isinstance(layers[0].get("digest"), str) or not layers[0]["digest"].startswith("sha256:") \
            or len(layers[0]["digest"]) != 71:
        raise InvalidConfiguration(f"{shown}: the manifest has no feature layer", details={"file": shown,
                                                                                           "pointer": "/layers"})
    out: dict[str, Any] = manifest
    return out
