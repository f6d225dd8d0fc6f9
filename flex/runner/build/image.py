"""A devcontainer's image, built as the reference CLI builds it, on flex's runtime:

    image                      pulled (unless in the store)
    build.dockerfile           the user's Dockerfile through the runtime's builder (build.context, args,
                               target), tagged ``<name>`` (the reference's ``vsc-<folder>-<sha256>``)
    features                   then the generated features build on top (dockerfile.py), tagged
                               ``<name>-features``, one cached layer per feature

and, either way, the merged image metadata (base image label entries + features + devcontainer.json) that
container planning reads: containerEnv, mounts, capAdd, securityOpt, init, entrypoint, privileged and the
lifecycle hooks, features' before the config's. Called by the runner and by `flex build`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.devcontainer.config import ResolvedConfig
from flex.devcontainer.features.dockerfile import plan_build
from flex.devcontainer.features.merge import LABEL, merge_configuration, metadata_entries, parse_label
from flex.devcontainer.features.order import Feature
from flex.errors import FailedPrecondition, InvalidConfiguration, NotFound
from flex.runner.build.features import check_frozen_lockfile, resolve_features, write_lockfile

__all__ = ["DevcontainerImage", "build_devcontainer_image", "container_users", "default_image_name", "image_name_for",
           "open_image_store"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DevcontainerImage:
    name: str                                   # the image to run (in the runtime's image store)
    names: list[str]                            # every name it was given
    metadata: list[dict[str, Any]]              # devcontainer.metadata entries, base image's first
    merged: dict[str, Any]                      # the config merged with them (merge_configuration)
    features: list[Feature] = field(default_factory=list)
    built: bool = False                         # False: an image used as it is


def default_image_name(resolved: ResolvedConfig) -> str:
    """The reference CLI's image name for a workspace: ``vsc-<folder name>-<sha256 of its path>``."""
    folder = resolved.local_workspace_folder
    return image_name_for(f"vsc-{os.path.basename(folder)}-{hashlib.sha256(folder.encode()).hexdigest()}")


def image_name_for(text: str) -> str:
    """``text`` as a valid image name: lower case, only ``[a-z0-9._-]``, and each run of separators one the
    reference grammar allows (``.``, ``_``, ``__`` or dashes; a mixed run keeps its first), so a folder named
    ``my_-app`` or ``a._b`` still builds."""
    name = re.sub(r"[^a-z0-9._-]+", "", text.lower())

    def sep(m: re.Match[str]) -> str:
        run = m.group(0)
        return run if set(run) == {"-"} or run in (".", "_", "__") else run[0]

    return re.sub(r"[._-]+", sep, name).strip("._-")


def container_users(entries: Sequence[dict[str, Any]], image_user: str | None) -> tuple[str, str]:
    """(containerUser, remoteUser): the last entry that names one, else the image's USER, else root."""
    container = next((e["containerUser"] for e in reversed(entries) if e.get("containerUser")), None) \
        or image_user or "root"
    remote = next((e["remoteUser"] for e in reversed(entries) if e.get("remoteUser")), None) or container
    return container, remote


def open_image_store() -> Any:
    """The runtime's image store of FLEX_HOME, with this user's ownership mode."""
    from flex.runtime.base.home import Home
    from flex.runtime.images.store import ImageStore
    from flex.runtime.unpack.userns import store_ownership

    return ImageStore(Home.open(), ownership=store_ownership())


def _ensure_pulled(store: Any, ref: str, progress: Progress) -> Any:
    try:
        return store.get(ref)
    except NotFound:
        pass
    from flex.runtime.transfer.pull import pull

    progress(f"pulling {ref}")
    pull(store, ref)
    return store.get(ref)


def _runtime_build(**kwargs: Any) -> Any:
    """The runtime's Dockerfile builder (flex.runtime.build: BuildOptions, build)."""
    import importlib

    try:
        builder = importlib.import_module("flex.runtime.build")
    except ImportError as err:
        raise FailedPrecondition("this flex has no Dockerfile builder (flex.runtime.build)") from err
    return builder.build(builder.BuildOptions(**kwargs))


def _dockerfile_build(resolved: ResolvedConfig, tag: str, *, no_cache: bool, progress: Progress) -> None:
    config = resolved.configuration
    build = config.get("build") or {}
    config_dir = Path(resolved.workspace.config_file).parent
    dockerfile = build.get("dockerfile") or config.get("dockerFile")
    context = build.get("context") or config.get("context") or "."
    if not isinstance(dockerfile, str) or not dockerfile:
        raise InvalidConfiguration(f"{resolved.workspace.config_file}: /build: build needs dockerfile")
    dockerfile_path = (config_dir / dockerfile).resolve()
    context_path = (config_dir / context).resolve()
    inside = os.path.realpath(resolved.local_workspace_folder)
    for what, p in (("build.dockerfile", dockerfile_path), ("build.context", context_path)):
        if os.path.commonpath([os.path.realpath(p), inside]) != inside:
            raise InvalidConfiguration(f"{resolved.workspace.config_file}: {what} {p} is outside the workspace folder",
                                       details={"file": resolved.workspace.config_file})
    if not dockerfile_path.is_file():
        raise NotFound(f"Dockerfile {dockerfile_path} not found",
                       hint=f"build.dockerfile is relative to {config_dir}")
    _runtime_build(context=context_path, dockerfile=dockerfile_path, tags=[tag],
                   build_args={str(k): str(v) for k, v in (build.get("args") or {}).items()},
                   target=build.get("target"), no_cache=no_cache, progress=progress)


def build_devcontainer_image(resolved: ResolvedConfig, *, no_cache: bool = False, progress: Progress | None = None,
                             image_names: Sequence[str] = (), lockfile: bool = True,
                             frozen_lockfile: bool = False,
                             remote_user_uid: tuple[int, int] | None = None) -> DevcontainerImage:
    """Build (or pull) the image ``resolved`` describes; see the module's docstring. ``frozen_lockfile``:
    fail, before building, when devcontainer-lock.json would change. ``remote_user_uid``: the workspace
    owner's (uid, gid) inside the container, for updateRemoteUserUID's layer (uid.py)."""
    image = _build_devcontainer_image(resolved, no_cache=no_cache, progress=progress, lockfile=lockfile,
                                      image_names=() if remote_user_uid else image_names,
                                      frozen_lockfile=frozen_lockfile)
    if remote_user_uid is None:
        return image
    from flex.runner.build.uid import UID_DOCKERFILE, uid_update_user, uid_update_wanted

    store = open_image_store()
    image_user = (store.get(image.name).config.get("config") or {}).get("User")
    user = uid_update_user(image.metadata, image_user)
    uid, gid = remote_user_uid
    if not uid_update_wanted(image.merged) or user is None or uid == 0:
        for extra in image_names:
            got = store.get(image.name)
            store.set_name(store.normalize(extra), got.target, got.target_type, got.manifest_digest)
        return DevcontainerImage(image.name, list(image_names) or image.names, image.metadata, image.merged,
                                 image.features, image.built)
    target = f"{default_image_name(resolved)}-uid"
    context = Path(tempfile.mkdtemp(prefix="uid-", dir=Path(store.home.tmp)))
    try:
        (context / "Dockerfile").write_text(UID_DOCKERFILE)
        _runtime_build(context=context, dockerfile=context / "Dockerfile", tags=[target, *image_names],
                       build_args={"BASE_IMAGE": image.name, "REMOTE_USER": user, "NEW_UID": str(uid),
                                   "NEW_GID": str(gid), "IMAGE_USER": image_user or "root"},
                       no_cache=no_cache, progress=progress or (lambda _line: None))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return DevcontainerImage(target, [target, *image_names], image.metadata, image.merged, image.features, True)


def _build_devcontainer_image(resolved: ResolvedConfig, *, no_cache: bool, progress: Progress | None,
                              image_names: Sequence[str], lockfile: bool,
                              frozen_lockfile: bool) -> DevcontainerImage:
    say = progress or (lambda _line: None)
    config = resolved.configuration
    if "dockerComposeFile" in config:
        raise FailedPrecondition("dockerComposeFile configurations are not supported yet",
                                 hint="use an image or a Dockerfile in devcontainer.json")
    if not any(k in config for k in ("image", "build", "dockerFile")):
        raise InvalidConfiguration(f"{resolved.workspace.config_file}: (top level): expected one of image, build "
                                   "(with dockerfile) or dockerComposeFile",
                                   details={"file": resolved.workspace.config_file, "pointer": ""})
    ordered = resolve_features(resolved, progress=say)  # before any build: a bad feature fails fast
    if frozen_lockfile:
        check_frozen_lockfile(resolved, ordered)
    store = open_image_store()
    name = default_image_name(resolved)
    if "image" in config:
        base_ref = str(config["image"])
        base = _ensure_pulled(store, base_ref, say)
    else:
        _dockerfile_build(resolved, name, no_cache=no_cache, progress=say)
        base_ref = name
        base = store.get(name)
    image_cfg = base.config.get("config") or {}
    base_entries = parse_label((image_cfg.get("Labels") or {}).get(LABEL))
    entries = metadata_entries(base_entries, [(f.user_id, f.metadata) for f in ordered], config)
    merged = merge_configuration(config, entries)
    if not ordered:
        names = list(image_names)
        for extra in names:
            store.set_name(store.normalize(extra), base.target, base.target_type, base.manifest_digest)
        return DevcontainerImage(base_ref, names or [base_ref], entries, merged, [], built="image" not in config)
    container_user, remote_user = container_users(entries, image_cfg.get("User"))
    plan = plan_build(ordered, base_image=base_ref, image_user=image_cfg.get("User") or "root",
                      container_user=container_user, remote_user=remote_user, metadata_entries=entries,
                      config_container_env={str(k): str(v) for k, v in (config.get("containerEnv") or {}).items()})
    target = f"{name}-features"
    tmp_root = Path(store.home.tmp)
    context = Path(tempfile.mkdtemp(prefix="features-", dir=tmp_root))
    try:
        for rel, src in plan.folders.items():
            shutil.copytree(src, context / rel, symlinks=True, dirs_exist_ok=True)
        for rel, data in plan.files.items():
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            (context / rel).write_bytes(data)
        (context / "Dockerfile.extended").write_text(plan.dockerfile)
        result = _runtime_build(context=context, dockerfile=context / "Dockerfile.extended",
                                tags=[target, *image_names], build_args=plan.build_args, target=plan.target,
                                no_cache=no_cache, progress=say)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    if lockfile and not frozen_lockfile:
        write_lockfile(resolved, ordered)
    names = list(getattr(result, "names", None) or [target, *image_names])
    return DevcontainerImage(target, names, entries, merged, ordered, built=True)
