"""Layers are untrusted: every escape is refused with a clear error and writes nothing outside."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from flex.errors import InvalidArgument
from flex.runtime.base.home import Home
from flex.runtime.diff.tarsafe import UnsafeLayer
from flex.runtime.images.store import ImageStore, parse_manifest
from flex.runtime.unpack.unpacker import LayerTooLarge, unpack_layer
from tests.conftest import missing

Entry = tuple[str, str, object]  # (name, kind, payload)


def make_tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if isinstance(e, tuple):
                tf.addfile(e[0], io.BytesIO(e[1]))
            else:
                tf.addfile(e)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


@pytest.fixture
def store(flex_home: Path) -> ImageStore:
    return ImageStore(Home.open())


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_text("untouched")
    return out


def snapshot_of(store: ImageStore, tmp_path: Path, data: bytes, parent: str | None = None) -> str:
    blob = tmp_path / f"layer-{hashlib.sha256(data).hexdigest()[:8]}.tar"
    blob.write_bytes(data)
    return unpack_layer(store.snapshots, blob, "sha256:" + hashlib.sha256(data).hexdigest(), parent).chain_id


def outside_state(outside: Path) -> list[tuple[str, str]]:
    return sorted((str(p.relative_to(outside)), p.read_text() if p.is_file() else "")
                  for p in outside.rglob("*"))


def case_symlink_dir(out: Path) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    return [link("escape", str(out)), reg("escape/evil")]


CASES = {
    "dotdot": (lambda out: [reg("../../../../evil")], "contains '..'"),
    "dotdot-inside": (lambda out: [directory("a"), reg("a/../../evil")], "contains '..'"),
    "symlink-then-write": (case_symlink_dir, "is a symlink"),
    "relative-symlink-then-write": (lambda out: [link("up", "../../../../../../.."), reg("up" + str(out) + "/evil")],
                                    "is a symlink"),
    "hardlink-dotdot": (lambda out: [link("hl", "../../outside/secret", tarfile.LNKTYPE)], "contains '..'"),
    # an absolute target means the snapshot's own /…/outside/secret, which does not exist
    "hardlink-absolute": (lambda out: [link("hl", str(out / "secret"), tarfile.LNKTYPE)], "does not exist"),
    "hardlink-through-symlink": (lambda out: [link("s", str(out)), link("hl", "s/secret", tarfile.LNKTYPE)],
                                 "is a symlink"),
    "hardlink-missing": (lambda out: [link("hl", "etc/shadow", tarfile.LNKTYPE)], "does not exist"),
    "hardlink-to-dir": (lambda out: [directory("d"), link("hl", "d", tarfile.LNKTYPE)], "to a directory"),
    "bad-whiteout": (lambda out: [reg(".wh..")], "malformed whiteout"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_escape_refused(store: ImageStore, outside: Path, tmp_path: Path, case: str) -> None:
    build, message = CASES[case]
    before = outside_state(outside)
    with pytest.raises(UnsafeLayer, match=message):
        snapshot_of(store, tmp_path, make_tar(build(outside)))
    assert outside_state(outside) == before
    assert list(store.snapshots.walk()) == []  # the half-written snapshot is gone


def test_absolute_names_are_relative_to_the_snapshot(store: ImageStore, outside: Path, tmp_path: Path) -> None:
    """As Docker and containerd read them: "/x" is the snapshot's x, for entries and hardlink targets."""
    before = outside_state(outside)
    chain = snapshot_of(store, tmp_path, make_tar([directory("/etc"), reg("/etc/abs", b"abs"),
                                                   link("//etc/hl", "/etc/abs", tarfile.LNKTYPE),
                                                   reg(str(outside / "evil"), b"inside")]))
    layer = store.snapshots.lowers(chain)[0]
    assert (layer / "etc/abs").read_bytes() == b"abs"
    assert (layer / "etc/hl").stat().st_ino == (layer / "etc/abs").stat().st_ino
    assert (layer / str(outside / "evil").lstrip("/")).read_bytes() == b"inside"
    assert outside_state(outside) == before


def test_symlink_in_lower_layer_then_write(store: ImageStore, outside: Path, tmp_path: Path) -> None:
    base = snapshot_of(store, tmp_path, make_tar([link("etc", str(outside))]))
    with pytest.raises(UnsafeLayer, match="is a symlink in a lower layer"):
        snapshot_of(store, tmp_path, make_tar([reg("etc/passwd", b"pwned")]), parent=base)
    assert outside_state(outside) == [("secret", "untouched")]


def test_replacing_a_symlink_does_not_follow_it(store: ImageStore, outside: Path, tmp_path: Path) -> None:
    data = make_tar([link("f", str(outside / "secret")), reg("f", b"replaced")])
    chain = snapshot_of(store, tmp_path, data)
    layer = store.snapshots.lowers(chain)[0]
    assert (layer / "f").read_bytes() == b"replaced" and not (layer / "f").is_symlink()
    assert (outside / "secret").read_text() == "untouched"


def test_overlay_xattrs_from_a_layer_are_dropped(store: ImageStore, tmp_path: Path) -> None:
    info, data = reg("d/f")
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.ok": "yes"}
    d = directory("d")
    d.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y"}
    chain = snapshot_of(store, tmp_path, make_tar([d, (info, data)]))
    layer = store.snapshots.lowers(chain)[0]
    assert "trusted.overlay.opaque" not in os.listxattr(layer / "d")
    assert "trusted.overlay.redirect" not in os.listxattr(layer / "d/f")
    assert os.getxattr(layer / "d/f", "user.ok") == b"yes"


def test_decompression_bomb_stops_at_the_limit(store: ImageStore, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_MAX_LAYER_SIZE", str(4 << 20))
    tar = make_tar([reg("zeros", bytes(64 << 20))])
    blob = tmp_path / "bomb.tar.gz"
    blob.write_bytes(gzip.compress(tar, 9))
    assert blob.stat().st_size < 200_000
    with pytest.raises(LayerTooLarge, match="more than 4194304 bytes"):
        unpack_layer(store.snapshots, blob, "sha256:" + hashlib.sha256(tar).hexdigest(), None)
    assert list(store.snapshots.walk()) == []


def test_diff_id_mismatch_is_refused(store: ImageStore, tmp_path: Path) -> None:
    blob = tmp_path / "l.tar"
    blob.write_bytes(make_tar([reg("a")]))
    with pytest.raises(InvalidArgument, match="image config says"):
        unpack_layer(store.snapshots, blob, "sha256:" + "0" * 64, None)
    assert list(store.snapshots.walk()) == []


def test_device_nodes_as_root_and_whiteout_form(store: ImageStore, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("needs root")
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor, dev.mode = 1, 3, 0o666
    base = snapshot_of(store, tmp_path, make_tar([dev, reg("gone")]))
    top = snapshot_of(store, tmp_path, make_tar([reg(".wh.gone", b"")]), parent=base)
    layer = store.snapshots.lowers(top)[0]
    st = os.lstat(layer / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert store.snapshots.stat(top).labels["flex.dev/whiteouts"] == "chardev"
    st = os.lstat(store.snapshots.lowers(base)[0] / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_manifest_limits() -> None:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 1}
    manifest = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                "digest": "sha256:" + "b" * 64, "size": 2}}
    with pytest.raises(InvalidArgument, match="128 layers; flex refuses more than 127"):
        parse_manifest(json.dumps({**manifest, "layers": [layer] * 128}).encode(), "m")
    parse_manifest(json.dumps({**manifest, "layers": [layer] * 127}).encode(), "m")
    big = json.dumps({**manifest, "layers": [layer], "annotations": {"x": "y" * (4 << 20)}}).encode()
    with pytest.raises(InvalidArgument, match="over 4194304 bytes"):
        parse_manifest(big, "m")
    huge_config = {**manifest, "layers": [layer]}
    huge_config["config"] = {**manifest["config"], "size": 5 << 20}  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="config of 5242880 bytes refused"):
        parse_manifest(json.dumps(huge_config).encode(), "m")
