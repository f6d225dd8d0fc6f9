"""Fixtures for builder tests: a FLEX_HOME per mode (root, and rootless as the user flextest) holding the
cached Debian minbase as one image, stored the way `flex image bootstrap` stores it; `flex image build`
run as that user, with the shipped defaults."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Result, debian_rootfs_tar, missing, remove_later
from tests.runtime.containers.conftest import USER, Mode, _python_for_user

BASE = "flextest/minbase:1"

# The cached minbase tar as a one-layer image with an *uncompressed* layer (a valid OCI layer type):
# what `flex image bootstrap` stores, minus its gzip pass (a minute on a loaded 2-core machine).
_STORE_BASE = """
import hashlib, json, sys
from pathlib import Path
from flex.runtime.base.home import Home
from flex.runtime.images.mediatypes import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from flex.runtime.images.store import ImageStore, host_platform
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.image import unpack_image
from flex.runtime.unpack.userns import store_ownership
from flex.runtime.base.progress import NullProgress
store = ImageStore(Home.open(), ownership=store_ownership())
tar = Path(sys.argv[1])
with lease(store.db) as held, open(tar, "rb") as f:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    layer = "sha256:" + h.hexdigest()
    held.add("content", layer)
    f.seek(0)
    store.content.ingest(iter(lambda: f.read(1 << 20), b""), layer)
    cfg = {"architecture": host_platform()["architecture"], "os": "linux", "created": "1970-01-01T00:00:00Z",
           "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                      "Cmd": ["/bin/bash"]},
           "rootfs": {"type": "layers", "diff_ids": [layer]}, "history": [{"created_by": "mmdebstrap"}]}
    def put(obj):
        data = json.dumps(obj, sort_keys=True).encode()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        held.add("content", d)
        store.content.put(data, d)
        return d, len(data)
    cd, cs = put(cfg)
    md, _ = put({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
                 "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": tar.stat().st_size}]})
    unpack_image(store, [(layer, layer)], held, NullProgress())
    name = store.normalize(sys.argv[2])
    store.set_name(name, md, OCI_MANIFEST, md)
print(name)
"""


def image_from_tar(mode: Mode, tar: Path, name: str) -> str:
    proc = subprocess.run(mode.python_argv("-c", _STORE_BASE, str(tar), name), env=mode.env(),
                          capture_output=True, text=True, timeout=900, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@dataclass
class Builds:
    mode: Mode
    base: str
    scratch: Path  # a directory this mode's user may write (contexts go here)

    def flex(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 300) -> Result:
        argv = self.mode.python_argv("-m", "flex", *args)
        full = {**self.mode.env(), **(env or {})}
        if self.mode.rootless and env:
            argv = argv[:4] + [f"{k}={v}" for k, v in env.items()] + argv[4:]
        proc = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=timeout, cwd=cwd or "/")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: object) -> str:
        r = self.flex(*args, **kw)  # type: ignore[arg-type]
        assert r.code == 0, f"flex {' '.join(args)} -> {r.code}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def context(self, name: str, files: dict[str, str]) -> Path:
        d = self.scratch / name
        shutil.rmtree(d, ignore_errors=True)
        for rel, text in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        if self.mode.rootless:
            subprocess.run(["chown", "-R", USER, str(d)], check=True)
        return d

    def build(self, ctx: Path, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.flex("image", "build", *args, str(ctx), env=env)


_MADE: dict[tuple[Path, str], Builds] = {}


def _make(name: str, root: Path) -> Builds:
    if (root, name) in _MADE:
        return _MADE[(root, name)]
    if os.geteuid() != 0:
        missing("builder tests run as root (they also act as the unprivileged user flextest)")
    if not shutil.which("crun"):
        missing("crun is not installed (installer/install.sh)")
    if name == "rootless":
        try:
            pwd.getpwnam(USER)
        except KeyError:
            missing("test user flextest missing: run installer/install.sh --dev as root")
        python = _python_for_user()
    else:
        python = [sys.executable]
    home = root / f"home-{name}"
    home.mkdir()
    scratch = root / f"ctx-{name}"
    scratch.mkdir()
    if name == "rootless":
        subprocess.run(["chown", USER, str(home), str(scratch)], check=True)
    mode = Mode(name=name, home=home, python=python)
    base = image_from_tar(mode, debian_rootfs_tar(), BASE)
    _MADE[(root, name)] = Builds(mode, base, scratch)
    return _MADE[(root, name)]


@pytest.fixture(scope="session")
def build_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="flex-build-tests-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    for pid_file in d.glob("home-*/run/userns.pid"):
        subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=False)
    remove_later(d)


@pytest.fixture(scope="session", params=["root", "rootless"])
def builds(request: pytest.FixtureRequest, build_root: Path) -> Builds:
    return _make(str(request.param), build_root)


@pytest.fixture(scope="session")
def root_builds(build_root: Path) -> Builds:
    return _make("root", build_root)
