"""A committed layer snapshot is on disk, not only in the page cache: unpack syncs its filesystem
(syncfs) before the commit. Checked on a real ext4 in a loop device: the layer's bytes must reach the
backing file by the time unpack_layer returns (without the sync they wait ~30 s for writeback)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.images.store import ImageStore
from flex.runtime.unpack.unpacker import unpack_layer
from tests.runtime.images.test_malicious import make_tar, reg


@pytest.fixture
def loop_ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed (e2fsprogs)")
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    # a long journal commit interval: only writeback or a sync puts file data on the device
    subprocess.run(["mount", "-o", "loop,commit=300", str(image), str(mnt)], check=True, capture_output=True)
    try:
        yield image, mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_unpacked_layer_is_on_disk_when_committed(loop_ext4: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    image, mnt = loop_ext4
    monkeypatch.setenv("FLEX_HOME", str(mnt / "home"))
    store = ImageStore(Home.open())
    payload = os.urandom(256 << 10)
    tar = make_tar([reg("data", payload)])
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar)
    try:
        chain = unpack_layer(store.snapshots, blob, "sha256:" + hashlib.sha256(tar).hexdigest(), None).chain_id
        assert (store.snapshots.lowers(chain)[0] / "data").read_bytes() == payload
        # the backing file is what the device holds (the loop driver writes into it as the fs flushes)
        device = image.read_bytes()
        on_disk = payload[:4096] in device and payload[-4096:] in device
        del device
        assert on_disk, "the committed layer's data is not on the device yet"
    finally:
        store.db.close()
