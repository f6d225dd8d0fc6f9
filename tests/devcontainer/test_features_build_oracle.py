"""The generated features build against the reference CLI's own build, where the reference can run here:
`devcontainer build --docker-path podman` (podman 4.3, its non-BuildKit path) and flex's generated
Dockerfile + context built by buildah (the oracle builder), on the same base image and config. The
``devcontainer.metadata`` label, the image's Env (features' containerEnv) and User must be the same, and the
features must have run (their output is in the image). Podman and buildah get a storage of their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flex.devcontainer.config import read_config
from flex.devcontainer.features.dockerfile import plan_build
from flex.devcontainer.features.merge import LABEL, metadata_entries
from flex.runner.build.features import resolve_features
from flex.runner.build.image import container_users
from tests.conftest import missing
from tests.devcontainer.features_helpers import write_feature
from tests.devcontainer.test_oracle import REFERENCE

pytestmark = pytest.mark.oracle

BASE = "localhost/flex-features-oracle/minbase:1"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, minbase_tar: Path) -> Iterator[list[str]]:
    for tool in ("podman", "buildah"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (run installer/install.sh --dev)")
    if not REFERENCE.exists():
        missing(f"the reference CLI is not installed at {REFERENCE}")
    root = tmp_path_factory.mktemp("storage")
    opts = ["--root", str(root / "root"), "--runroot", str(root / "run")]
    proc = subprocess.run(["podman", *opts, "import", "-q", str(minbase_tar), BASE], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    yield opts
    subprocess.run(["podman", *opts, "system", "reset", "-f"], capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    shutil.rmtree(root, ignore_errors=True)


def _inspect(opts: list[str], image: str) -> dict[str, Any]:
    out = subprocess.run(["podman", *opts, "image", "inspect", image], check=True, capture_output=True, text=True)
    config: dict[str, Any] = json.loads(out.stdout)[0]["Config"]
    return config


def _read(opts: list[str], image: str, paths: list[str]) -> str:
    """Files of an image, read through `podman image mount` (running one needs cgroups podman lacks here)."""
    mnt = subprocess.run(["podman", *opts, "image", "mount", image], check=True, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL).stdout.strip()
    try:
        return "".join((Path(mnt) / p.lstrip("/")).read_text() for p in paths) + \
            " ".join(sorted(os.listdir(Path(mnt) / "tmp/dev-container-features")))
    finally:
        subprocess.run(["podman", *opts, "image", "unmount", image], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)


def test_label_env_and_installs_match_the_reference(tmp_path: Path, storage: list[str]) -> None:
    ws = tmp_path / "ws"
    dc = ws / ".devcontainer"
    write_feature(dc / "color", {"id": "color", "version": "2.0.0", "name": "Color", "options": {
        "favorite": {"type": "string", "enum": ["red", "blue"], "default": "red"}},
        "containerEnv": {"COLOR_HOME": "/opt/color", "QUOTED": 'a"b'}, "init": True, "privileged": True},
        'echo "$FAVORITE for $_REMOTE_USER at $_REMOTE_USER_HOME" > /color.txt\n')
    write_feature(dc / "hello", {"id": "hello", "version": "1.0.0", "installsAfter": ["./color"],
                                 "options": {"greeting": {"type": "string", "default": "hi"}},
                                 "capAdd": ["SYS_PTRACE"], "postCreateCommand": "echo hi",
                                 "mounts": [{"source": "v", "target": "/v", "type": "volume"}]},
                  'echo "$GREETING, color home $COLOR_HOME" > /hello.txt\n')
    config = {"image": BASE, "features": {"./hello": {"greeting": "hey"}, "./color": {"favorite": "blue"}},
              "remoteUser": "root", "containerEnv": {"FROM_CONFIG": "1"}, "postStartCommand": "true"}
    (dc / "devcontainer.json").write_text(json.dumps(config))

    podman = tmp_path / "podman"  # the reference runs `<docker-path> ...`: give it podman on our storage
    podman.write_text(f"#!/bin/sh\nexec podman {' '.join(storage)} \"$@\"\n")
    podman.chmod(0o755)
    proc = subprocess.run([str(REFERENCE), "build", "--workspace-folder", str(ws), "--docker-path", str(podman),
                           "--image-name", "localhost/ref-built:1"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HOME": str(tmp_path)}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = _inspect(storage, "localhost/ref-built:1")

    resolved = read_config(ws, env=dict(os.environ))
    ordered = resolve_features(resolved, cache_dir=tmp_path / "cache")
    entries = metadata_entries([], [(f.user_id, f.metadata) for f in ordered], resolved.configuration)
    user, remote = container_users(entries, None)
    plan = plan_build(ordered, base_image=BASE, image_user="root", container_user=user, remote_user=remote,
                      metadata_entries=entries, config_container_env=resolved.configuration.get("containerEnv"))
    ctx = tmp_path / "ctx"
    for rel, src in plan.folders.items():
        shutil.copytree(src, ctx / rel)
    for rel, data in plan.files.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    (ctx / "Dockerfile.extended").write_text(plan.dockerfile)
    args = [a for k, v in plan.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    subprocess.run(["buildah", *storage, "bud", "--layers", "-q", "-f", str(ctx / "Dockerfile.extended"), *args,
                    "--target", plan.target, "-t", "localhost/flex-gen:1", str(ctx)], check=True,
                   capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    mine = _inspect(storage, "localhost/flex-gen:1")

    assert mine["Labels"][LABEL] == ref["Labels"][LABEL]
    assert json.loads(mine["Labels"][LABEL])[0] == {"id": "./color", "init": True, "privileged": True}
    assert mine["Env"] == ref["Env"] and mine.get("User") == ref.get("User")
    assert "COLOR_HOME=/opt/color" in mine["Env"] and "FROM_CONFIG=1" in mine["Env"]  # the config's too, last
    installed = "blue for root at /root\nhey, color home /opt/color\n"
    # the reference without BuildKit COPYs each feature in and leaves it; with BuildKit (and in flex) the
    # bind-mounted feature folder is removed after its install
    assert _read(storage, "localhost/ref-built:1", ["/color.txt", "/hello.txt"]) == \
        installed + "color_0 devcontainer-features.builtin.env hello_1"
    assert _read(storage, "localhost/flex-gen:1", ["/color.txt", "/hello.txt"]) == \
        installed + "devcontainer-features.builtin.env"
