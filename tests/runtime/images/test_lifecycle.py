"""Bootstrap a Debian image, push it, pull it back (same digest), compare with umoci, survive SIGKILL
at random points of a pull, GC while a pull runs, import/export OCI archives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.images.store import ImageStore
from flex.runtime.transfer.bootstrap import DEFAULT_PATH, image_from_rootfs_tar
from flex.runtime.transfer.push import push
from tests.conftest import run_flex

from .conftest import RegistryServer, run
from .test_pull import mounted
from .treecmp import describe, diff

pytestmark = [pytest.mark.registry, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, mount)")]


@pytest.fixture(scope="module")
def minbase_image(registry: RegistryServer, minbase_tar: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The cached mmdebstrap minbase, stored by flex as a single-layer image and pushed to the registry."""
    home = tmp_path_factory.mktemp("bootstrap-home")
    old = os.environ.get("FLEX_HOME")
    os.environ["FLEX_HOME"] = str(home)
    try:
        store = ImageStore(Home.open())
        img = image_from_rootfs_tar(store, minbase_tar, "flex/minbase:bookworm")
        ref = f"{registry.host}/flex/minbase:bookworm"
        assert push(store, img.name, ref) == img.manifest_digest
    finally:
        if old is None:
            os.environ.pop("FLEX_HOME", None)
        else:
            os.environ["FLEX_HOME"] = old
    yield ref, img.manifest_digest


def _env(home: Path) -> dict[str, str]:
    return {"FLEX_HOME": str(home)}


def test_push_then_pull_gives_the_same_digest(flex_home: Path, minbase_image: tuple[str, str]) -> None:
    ref, digest = minbase_image
    res = run_flex("image", "pull", ref)
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == f"{ref}@{digest}"
    info = json.loads(run_flex("image", "inspect", ref, "--json").stdout)
    assert info["config"]["cmd"] == ["/bin/bash"]
    assert info["config"]["env"] == [f"PATH={DEFAULT_PATH}"]
    assert len(info["layers"]) == 1


@pytest.mark.slow
def test_minbase_matches_umoci(flex_home: Path, minbase_image: tuple[str, str], tmp_path: Path) -> None:
    ref, _ = minbase_image
    store = ImageStore(Home.open())
    from flex.runtime.transfer.pull import pull

    img = pull(store, ref)
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'layout'}:x")
    run("umoci", "unpack", "--image", f"{tmp_path / 'layout'}:x", str(tmp_path / "bundle"))
    expected = describe(tmp_path / "bundle" / "rootfs")
    with mounted(store, img, tmp_path / "mnt") as root:
        got = describe(root)
    assert len(expected) > 5000
    assert diff(expected, got) == []


def _pull_proc(ref: str, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "flex", "image", "pull", ref],
                            env={**os.environ, **_env(home)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _names(home: Path) -> list[str]:
    res = run_flex("image", "ls", "--json", env=_env(home))
    assert res.code == 0, res.stderr
    return [i["name"] for i in json.loads(res.stdout)]


@pytest.mark.slow
def test_sigkill_during_pull_never_lists_a_partial_image(tmp_path: Path, minbase_image: tuple[str, str]) -> None:
    ref, digest = minbase_image
    home = tmp_path / "home"
    rng = random.Random()
    kills = 0
    for delay in [0.05, 0.3, 0.7, 1.2, 2.0, 3.0]:
        proc = _pull_proc(ref, home)
        time.sleep(delay + rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        if proc.returncode == 0:
            assert _names(home) == [ref]
            break
        assert _names(home) == [], f"a killed pull (after {delay}s) left an image listed"
    assert kills >= 1
    res = run_flex("image", "pull", ref, env=_env(home))
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == f"{ref}@{digest}"
    # the killed pulls' leases died with them: prune removes their leftovers, keeps the image
    assert run_flex("image", "prune", env=_env(home)).code == 0
    store = ImageStore(Home.open(home))
    assert [i.key for i in store.snapshots.walk()] == store.get(ref).chain_ids
    assert len(list(store.content.walk())) == 3  # manifest, config, layer
    assert not list((home / "tmp").glob("ingest-*"))
    (layer,) = store.snapshots.lowers(store.get(ref).top_snapshot or "")
    assert (layer / "etc/debian_version").read_text().startswith("12")


@pytest.mark.slow
def test_prune_during_pull_keeps_what_the_pull_holds(tmp_path: Path, minbase_image: tuple[str, str]) -> None:
    ref, digest = minbase_image
    home = tmp_path / "home"
    proc = _pull_proc(ref, home)
    prunes = 0
    while proc.poll() is None:
        res = run_flex("image", "prune", env=_env(home))
        assert res.code == 0, res.stderr
        prunes += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert prunes >= 1
    assert out.decode().strip() == f"{ref}@{digest}"
    store = ImageStore(Home.open(home))
    (layer,) = store.snapshots.lowers(store.get(ref).top_snapshot or "")
    assert (layer / "usr/bin/bash").is_file()


def test_export_import_roundtrip_and_skopeo_reads_it(flex_home: Path, registry: RegistryServer,
                                                     tmp_path: Path) -> None:
    from .conftest import umoci_image_from_dirs
    from .test_pull import state_one

    state_one(tmp_path / "s1")
    layout = umoci_image_from_dirs(tmp_path, [tmp_path / "s1"])
    archive = tmp_path / "in.tar"
    run("skopeo", "copy", "--quiet", f"oci:{layout}:test", f"oci-archive:{archive}:test")
    res = run_flex("image", "import", str(archive), "imported:1")
    assert res.code == 0, res.stderr
    digest = res.stdout.strip().rsplit("@", 1)[1]
    out = tmp_path / "out.tar"
    assert run_flex("image", "export", "imported:1", str(out)).code == 0
    # `-` is stdout, not a file named "-"; a folder that is not there is one clear line
    with open(tmp_path / "stdout.tar", "wb") as f:
        proc = subprocess.run([sys.executable, "-m", "flex", "image", "export", "imported:1", "-"], stdout=f,
                              stderr=subprocess.PIPE, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "-").exists()
    assert (tmp_path / "stdout.tar").read_bytes() == out.read_bytes()
    missing = tmp_path / "no" / "such" / "out.tar"
    res = run_flex("image", "export", "imported:1", str(missing))
    assert res.code == 3 and res.stderr.splitlines()[0] == (
        f"error: cannot write {missing}: the folder {missing.parent} does not exist"), res.stderr
    assert not missing.parent.exists()
    # skopeo reads flex's archive back and sees the same manifest
    inspect = json.loads(run("skopeo", "inspect", "--raw", f"oci-archive:{out}").stdout)
    assert inspect["layers"] and "config" in inspect
    run("skopeo", "copy", "--quiet", f"oci-archive:{out}", f"oci:{tmp_path / 'back'}:x")
    index = json.loads((tmp_path / "back" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    # and importing our own export under another name changes nothing
    res = run_flex("image", "import", str(out), "again:1")
    assert res.code == 0 and res.stdout.strip().endswith(digest)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    res = run_flex("image", "import", str(bad), "bad:1")
    assert res.code == 7 and "not an OCI layout archive" in res.stderr, res.stderr


@pytest.mark.slow
def test_real_mmdebstrap_bootstrap(flex_home: Path) -> None:
    res = run_flex("image", "bootstrap", "tiny:1", "--variant", "extract", "--include", "base-files",
                   timeout=600)
    assert res.code == 0, res.stderr
    info = json.loads(run_flex("image", "inspect", "tiny:1", "--json").stdout)
    assert info["config"]["cmd"] == ["/bin/bash"] and len(info["layers"]) == 1
    store = ImageStore(Home.open())
    (layer,) = store.snapshots.lowers(store.get("tiny:1").top_snapshot or "")
    assert (layer / "etc/debian_version").read_text().startswith("12")
    bad = run_flex("image", "bootstrap", "x:1", "--include", "-oops")
    assert bad.code == 7 and "not a package name" in bad.stderr
