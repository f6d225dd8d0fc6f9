"""Interrupted downloads continue where they stopped (HTTP Range), within a pull when the connection
breaks off and across pulls after the process was killed; the digest is still checked over the whole
blob. The breaks are real: a proxy (cutproxy.py) in front of the real docker-registry stops sending."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.images.store import ImageStore
from flex.runtime.transfer.pull import pull

from .conftest import RegistryServer, run, skopeo_push, umoci_image_from_dirs
from .cutproxy import CutProxy

pytestmark = [pytest.mark.registry, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unpack owners)")]

MB = 1 << 20


@pytest.fixture(scope="module")
def big_layer(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str, int]:
    """An image whose one layer is ~4 MiB of incompressible data → (the data, layer digest, layer size)."""
    work = tmp_path_factory.mktemp("resume")
    data = os.urandom(4 * MB)
    (work / "state").mkdir()
    (work / "state" / "blob.bin").write_bytes(data)
    skopeo_push(umoci_image_from_dirs(work, [work / "state"]), "test", registry, "flex/resume:1")
    manifest = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry.host}/flex/resume:1").stdout)
    return data, manifest["layers"][0]["digest"], manifest["layers"][0]["size"]


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[CutProxy]:
    p = CutProxy(registry.host)
    yield p
    p.close()


def _check(store: ImageStore, ref: str, data: bytes) -> None:
    img = store.get(ref)
    (layer,) = store.snapshots.lowers(img.top_snapshot or "")
    assert (layer / "blob.bin").read_bytes() == data


def test_download_that_breaks_off_continues_with_range(flex_home: Path, big_layer: tuple[bytes, str, int],
                                                       proxy: CutProxy) -> None:
    data, digest, size = big_layer
    proxy.cuts, proxy.cut_after = 2, MB
    store = ImageStore(Home.open())
    pull(store, f"{proxy.host}/flex/resume:1")
    _check(store, f"{proxy.host}/flex/resume:1", data)
    assert proxy.ranges_for(digest) == [None, f"bytes={MB}-", f"bytes={2 * MB}-"]
    assert proxy.sent_for(digest) == size  # not a byte twice
    assert not list((flex_home / "tmp").glob("partial-*"))


def _killed_mid_download(proxy: CutProxy, flex_home: Path, digest: str, at: int) -> Path:
    """`flex image pull` through a proxy that stops after ``at`` bytes of the layer; kill -9 it there."""
    proxy.stall, proxy.cut_after = True, at
    proc = subprocess.Popen([sys.executable, "-m", "flex", "image", "pull", "-q", f"{proxy.host}/flex/resume:1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = flex_home / "tmp" / f"partial-{digest.replace(':', '-')}"
    try:
        assert proxy.stalled.wait(60), "the pull never reached the layer"
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size == at) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert partial.stat().st_size == at
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proxy.stall = False
    proxy.release.set()
    return partial


def test_killed_pull_resumes(flex_home: Path, big_layer: tuple[bytes, str, int], proxy: CutProxy) -> None:
    data, digest, size = big_layer
    _killed_mid_download(proxy, flex_home, digest, 3 * MB // 2)
    store = ImageStore(Home.open())
    assert store.list() == []
    sent_before = proxy.sent_for(digest)
    pull(store, f"{proxy.host}/flex/resume:1")
    _check(store, f"{proxy.host}/flex/resume:1", data)
    assert proxy.ranges_for(digest)[-1] == f"bytes={3 * MB // 2}-"
    assert proxy.sent_for(digest) - sent_before == size - 3 * MB // 2


def test_resumed_bytes_that_do_not_check_out_are_fetched_again(flex_home: Path, big_layer: tuple[bytes, str, int],
                                                              proxy: CutProxy) -> None:
    """A partial file with a wrong byte (a torn write after a crash): the digest over the whole blob
    fails, and the layer is downloaded once more from the start; nothing wrong is unpacked."""
    data, digest, _ = big_layer
    partial = _killed_mid_download(proxy, flex_home, digest, 2 * MB)
    raw = bytearray(partial.read_bytes())
    raw[MB] ^= 0xFF
    partial.write_bytes(bytes(raw))
    store = ImageStore(Home.open())
    pull(store, f"{proxy.host}/flex/resume:1")
    _check(store, f"{proxy.host}/flex/resume:1", data)
    assert proxy.ranges_for(digest)[-2:] == [f"bytes={2 * MB}-", None]


def test_registry_that_ignores_range_sends_the_whole_blob(flex_home: Path, big_layer: tuple[bytes, str, int],
                                                          proxy: CutProxy) -> None:
    data, digest, size = big_layer
    _killed_mid_download(proxy, flex_home, digest, MB)
    proxy.drop_range = True
    sent_before = proxy.sent_for(digest)
    store = ImageStore(Home.open())
    pull(store, f"{proxy.host}/flex/resume:1")
    _check(store, f"{proxy.host}/flex/resume:1", data)
    assert proxy.ranges_for(digest)[-1] == f"bytes={MB}-"  # asked for the rest, got (and kept) all of it
    assert proxy.sent_for(digest) - sent_before == size
