"""A layer applied on lower layers sees them as overlayfs shows them: whiteouts in either form, opaque
directories at any depth. A hardlink to a name the image deleted is refused, never copied back to life."""

from __future__ import annotations

import ctypes
import io
import os
import tarfile
from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.diff.tarsafe import UnsafeLayer, apply_tar
from flex.runtime.images.store import ImageStore
from tests.runtime.images.test_malicious import directory, link, make_tar, reg, snapshot_of

_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def store(flex_home: Path) -> ImageStore:
    return ImageStore(Home.open())


def kernel_sees(tmp_path: Path, lowers: list[Path], rel: str) -> bool:
    """Whether a read-only overlay of ``lowers`` (top first) shows ``rel``: the reference behaviour."""
    target = tmp_path / f"merged-{len(list(tmp_path.glob('merged-*')))}"
    target.mkdir()
    opts = "lowerdir=" + ":".join(str(p) for p in lowers)
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", ctypes.c_ulong(1), opts.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"overlay mount: {os.strerror(ctypes.get_errno())}")
    try:
        return os.path.lexists(target / rel)
    finally:
        _libc.umount2(os.fsencode(target), 2)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="trusted.overlay.* xattrs and overlay mounts need root")


@needs_root
def test_opaque_ancestor_hides_every_layer_below(store: ImageStore, tmp_path: Path) -> None:
    base = snapshot_of(store, tmp_path, make_tar([directory("a"), directory("a/b"), reg("a/b/secret", b"s3cret")]))
    # `a` replaced wholesale (rm -rf a; mkdir -p a/b): opaque a, a fresh a/b without the secret
    middle = snapshot_of(store, tmp_path, make_tar([directory("a"), reg("a/.wh..wh..opq", b""), directory("a/b")]),
                         parent=base)
    lowers = store.snapshots.lowers(middle)
    assert not kernel_sees(tmp_path, lowers, "a/b/secret")
    with pytest.raises(UnsafeLayer, match="does not exist in the image"):
        snapshot_of(store, tmp_path, make_tar([link("hl", "a/b/secret", tarfile.LNKTYPE)]), parent=middle)


def _xattr_whiteout_lowers(tmp_path: Path, marked: bool) -> list[Path]:
    """Two lower dirs as some tools write them: the top one deletes a/secret with an xattr whiteout
    (an empty file with trusted.overlay.whiteout; its directory marked trusted.overlay.opaque=x, which
    only readdir needs: lookups honour the whiteout either way)."""
    base, top = tmp_path / "base", tmp_path / "top"
    (base / "a").mkdir(parents=True)
    (base / "a" / "secret").write_bytes(b"s3cret")
    (top / "a").mkdir(parents=True)
    (top / "a" / "secret").write_bytes(b"")
    os.setxattr(top / "a" / "secret", "trusted.overlay.whiteout", b"y")
    if marked:
        os.setxattr(top / "a", "trusted.overlay.opaque", b"x")
    return [top, base]


@needs_root
@pytest.mark.parametrize("marked", [True, False], ids=["opaque-x", "unmarked"])
def test_xattr_whiteout_in_a_lower_layer_hides_the_name(tmp_path: Path, marked: bool) -> None:
    lowers = _xattr_whiteout_lowers(tmp_path, marked)
    assert not kernel_sees(tmp_path, lowers, "a/secret")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeLayer, match="does not exist in the image"):
        apply_tar(dest, io.BytesIO(make_tar([link("hl", "a/secret", tarfile.LNKTYPE)])), lowers=lowers)
    assert not (dest / "hl").exists()
