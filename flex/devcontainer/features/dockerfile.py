"""The ordered features as build steps: a generated Dockerfile and the files of its build context, shaped
like the reference CLI's BuildKit Dockerfile (``Dockerfile.extended``) so images match layer for layer:

    FROM <base> AS dev_containers_feature_content_normalize     the built-in env, normalised
    FROM <base> AS dev_containers_target_stage
      USER root, the built-in env copied in, *_HOME appended
      per feature: ENV lines of its containerEnv, then one RUN --mount=type=bind of its folder that runs
      devcontainer-features-install.sh (a wrapper sourcing the env files, then install.sh)
      USER <image user>, LABEL devcontainer.metadata, ENV lines of devcontainer.json's containerEnv

The context holds ``devcontainer-features.builtin.env`` and one folder ``<id>_<n>`` per feature (its files
plus ``devcontainer-features.env`` and the wrapper). The bind mount (not a COPY) keeps feature files out
of the layers, and a step's cache key is its parent, its text and the mounted folder's content: a
feature's digest and options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flex.devcontainer.features.merge import label_instruction
from flex.devcontainer.features.options import options_env, resolve_options
from flex.devcontainer.features.order import Feature

__all__ = [
    "FEATURES_DIR",
    "TARGET_STAGE",
    "FeatureStep",
    "FeaturesBuild",
    "container_env_lines",
    "install_wrapper",
    "passwd_lookup",
    "plan_build",
]

FEATURES_DIR = "/tmp/dev-container-features"
TARGET_STAGE = "dev_containers_target_stage"
BUILTIN_ENV = "devcontainer-features.builtin.env"


@dataclass(frozen=True)
class FeatureStep:
    feature: Feature
    consecutive_id: str  # "<id>_<n>": the folder in the context and in /tmp/dev-container-features
    options: dict[str, str | bool]


@dataclass
class FeaturesBuild:
    """Everything a Dockerfile builder needs: write ``files``, copy each ``folders`` source under its
    key, then build ``dockerfile`` with ``build_args`` to ``target``."""

    dockerfile: str
    steps: list[FeatureStep]
    files: dict[str, bytes] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = TARGET_STAGE


def _sq(text: str) -> str:
    return text.replace("'", "'\\''")


def passwd_lookup(user: str) -> str:
    """The shell the reference uses to read a user's passwd line (getent, else /etc/passwd)."""
    quoted = re.sub(r"(['\\])", r"\\\1", user)
    regex = re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\1", user).replace("'", "\\'")
    return (f" (command -v getent >/dev/null 2>&1 && getent passwd '{quoted}' || grep -E '^{regex}|^[^:]*:[^:]*:"
            f"{regex}:' /etc/passwd || true)")


def container_env_lines(env: dict[str, str] | None, *, escape_dollar: bool = False) -> str:
    """``ENV k="v"`` lines; ``"`` and ``\\`` escaped (and ``$`` for devcontainer.json's own env)."""
    if not env:
        return ""
    chars = '"\\$' if escape_dollar else '"\\'
    return "\n".join(f'ENV {k}="' + "".join("\\" + c if c in chars else c for c in v) + '"' for k, v in env.items())


def install_wrapper(feature: Feature, options: dict[str, str | bool]) -> str:
    """devcontainer-features-install.sh: banner, the env files sourced, then install.sh (as the reference)."""
    meta = feature.metadata
    ref = feature.ref
    # the reference knows a version-less id only for OCI features ("Unknown" otherwise)
    without_version = _without_version(ref.user_id) if ref.kind == "oci" else "Unknown"
    lines = "\n".join(f"    {line}" for line in options_env(options).split("\n")) if options else ""
    warn = ""
    if meta.get("deprecated"):
        warn += f'(!) WARNING: Using the deprecated Feature "{_sq(meta["id"])}". This Feature will no longer ' \
                "receive any further updates/support.\n"
    if meta.get("legacyIds") and meta.get("currentId") and meta.get("id") != meta.get("currentId"):
        warn += "(!) WARNING: This feature has been renamed. Please update the reference in devcontainer.json " \
                f'to "{_sq(meta["currentId"])}".'
    name, doc = _sq(meta.get("name") or "Unknown"), _sq(meta.get("documentationURL") or "")
    failed = f'ERROR: Feature "{name}" ({_sq(without_version)}) failed to install!' + \
        (f" Look at the documentation at {doc} for help troubleshooting this error." if doc else "")
    return f"""#!/bin/sh
set -e

on_exit () {{
\t[ $? -eq 0 ] && exit
\techo '{failed}'
}}

trap on_exit EXIT

echo ===========================================================================
{f"echo '{warn}'" if warn else ""}
echo 'Feature       : {name}'
echo 'Description   : {_sq(meta.get("description") or "")}'
echo 'Id            : {_sq(without_version)}'
echo 'Version       : {_sq(meta.get("version") or "")}'
echo 'Documentation : {doc}'
echo 'Options       :'
echo '{_sq(lines)}'
echo ===========================================================================

set -a
. ../devcontainer-features.builtin.env
. ./devcontainer-features.env
set +a

chmod +x ./install.sh
./install.sh
"""


def _without_version(user_id: str) -> str:
    if "@" in user_id:
        return user_id.split("@", 1)[0]
    head, _, last = user_id.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}"


def plan_build(ordered: list[Feature], *, base_image: str, image_user: str, container_user: str,
               remote_user: str, metadata_entries: list[dict[str, Any]],
               config_container_env: dict[str, str] | None = None) -> FeaturesBuild:
    """The features build for ``ordered`` (install order) on ``base_image`` (a name or image id)."""
    steps = [FeatureStep(f, f"{f.ref.id}_{i}", resolve_options(f.metadata, f.options, f.user_id))
             for i, f in enumerate(ordered)]
    builtin = f"{FEATURES_DIR}/{BUILTIN_ENV}"
    layers = (f'RUN \\\necho "_CONTAINER_USER_HOME=$({passwd_lookup(container_user)} | cut -d: -f6)" >> {builtin}'
              ' && \\\n'
              f'echo "_REMOTE_USER_HOME=$({passwd_lookup(remote_user)} | cut -d: -f6)" >> {builtin}\n\n')
    files = {BUILTIN_ENV: f"_CONTAINER_USER={container_user}\n_REMOTE_USER={remote_user}\n".encode()}
    folders = {}
    for step in steps:
        cid, dest = step.consecutive_id, f"{FEATURES_DIR}/{step.consecutive_id}"
        layers += container_env_lines(step.feature.metadata.get("containerEnv"))
        layers += (f"\nRUN --mount=type=bind,source=./{cid},target=/tmp/build-features-src/{cid} \\\n"
                   f"    cp -ar /tmp/build-features-src/{cid} {FEATURES_DIR} \\\n"
                   f" && chmod -R 0755 {dest} \\\n"
                   f" && cd {dest} \\\n"
                   " && chmod +x ./devcontainer-features-install.sh \\\n"
                   " && ./devcontainer-features-install.sh \\\n"
                   f" && rm -rf {dest}\n\n")
        folders[cid] = step.feature.resolved.folder
        files[f"{cid}/devcontainer-features.env"] = options_env(step.options).encode()
        files[f"{cid}/devcontainer-features-install.sh"] = install_wrapper(step.feature, step.options).encode()
    dockerfile = f"""ARG _DEV_CONTAINERS_BASE_IMAGE=scratch

FROM $_DEV_CONTAINERS_BASE_IMAGE AS dev_containers_feature_content_normalize
USER root
COPY ./{BUILTIN_ENV} /tmp/build-features/
RUN chmod -R 0755 /tmp/build-features/

FROM $_DEV_CONTAINERS_BASE_IMAGE AS {TARGET_STAGE}

USER root

RUN mkdir -p {FEATURES_DIR}
COPY --from=dev_containers_feature_content_normalize /tmp/build-features/ {FEATURES_DIR}

{layers}

ARG _DEV_CONTAINERS_IMAGE_USER=root
USER $_DEV_CONTAINERS_IMAGE_USER

{label_instruction(metadata_entries)}

{container_env_lines(config_container_env, escape_dollar=True)}
"""
    return FeaturesBuild(dockerfile=dockerfile, steps=steps, files=files, folders=folders,
                         build_args={"_DEV_CONTAINERS_BASE_IMAGE": base_image,
                                     "_DEV_CONTAINERS_IMAGE_USER": image_user})
