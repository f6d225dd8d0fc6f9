"""References, platform selection, the content store and the overlay snapshotter on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flex.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.content.store import ContentStore, DigestMismatch, sha256_digest
from flex.runtime.images.reference import is_insecure_registry, parse_reference
from flex.runtime.images.store import host_platform, parse_platform, select_platform
from flex.runtime.snapshots.base import Kind
from flex.runtime.snapshots.overlay import OverlaySnapshotter

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("debian", "docker.io/library/debian:latest"),
    ("debian:bookworm", "docker.io/library/debian:bookworm"),
    ("library/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/foo/bar:1", "docker.io/foo/bar:1"),
    ("ghcr.io/o/r/sub:v1.2", "ghcr.io/o/r/sub:v1.2"),
    ("localhost/app", "localhost/app:latest"),
    ("127.0.0.1:5000/repo@" + D, "127.0.0.1:5000/repo@" + D),
    ("127.0.0.1:5000/repo:tag@" + D, "127.0.0.1:5000/repo:tag@" + D),
])
def test_reference_normalisation(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "a/../b", "x:bad tag", "x@sha256:short", "a//b"])
def test_bad_references(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_reference(text)


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_insecure_registry("127.0.0.1:5000") and is_insecure_registry("localhost:5000")
    assert is_insecure_registry("[::1]:5000")
    assert not is_insecure_registry("registry.example:5000")
    monkeypatch.setenv("FLEX_INSECURE_REGISTRIES", "registry.example:5000, other.example")
    assert is_insecure_registry("registry.example:5000") and is_insecure_registry("other.example:443")


def test_platform_selection() -> None:
    plat = host_platform()
    other = "arm64" if plat["architecture"] != "arm64" else "amd64"
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "1" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": other}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "2" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": plat["architecture"]}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "3" * 64, "size": 1,
         "platform": {"os": "windows", "architecture": plat["architecture"]}},
    ]}
    assert select_platform(json.dumps(index).encode(), "x").digest == "sha256:" + "2" * 64
    index["manifests"] = index["manifests"][:1]
    with pytest.raises(NotFound, match=f"no image for linux/{plat['architecture']}"):
        select_platform(json.dumps(index).encode(), "x")


def test_platform_parsing_and_arm_variants() -> None:
    assert parse_platform("linux/amd64") == {"os": "linux", "architecture": "amd64"}
    assert parse_platform("Linux/aarch64") == {"os": "linux", "architecture": "arm64", "variant": "v8"}
    assert parse_platform("linux/arm/v6") == {"os": "linux", "architecture": "arm", "variant": "v6"}
    for bad in ("arm64", "linux/", "linux/amd64/v1/x", "linux/am d64", "../etc"):
        with pytest.raises(InvalidArgument, match="invalid platform"):
            parse_platform(bad)

    def index(*variants: str) -> bytes:
        return json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + str(i) * 64,
             "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": v}}
            for i, v in enumerate(variants, 1)]}).encode()

    assert select_platform(index("v6", "v7"), "x", parse_platform("linux/arm/v7")).digest == "sha256:" + "2" * 64
    assert select_platform(index("v5", "v6"), "x", parse_platform("linux/arm/v7")).digest.startswith("sha256:")
    with pytest.raises(NotFound, match="no image for linux/arm/v6"):  # v7 code does not run on an armv6
        select_platform(index("v7"), "x", parse_platform("linux/arm/v6"))


def test_resumable_writer_keeps_a_broken_download_and_gc_spares_a_live_one(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content", tmp_path / "tmp")
    data = os.urandom(300_000)
    digest = sha256_digest(data)
    with pytest.raises(ConnectionError), store.resumable_writer(digest, len(data)) as w:
        w.write(data[:100_000])
        raise ConnectionError("the network went away")
    (partial,) = (tmp_path / "tmp").glob("partial-*")
    assert partial.stat().st_size == 100_000 and not store.exists(digest)
    with store.resumable_writer(digest, len(data)) as w:
        assert w.written == 100_000
        # while it is being written, another writer of the blob gets a private temp file, and GC spares it
        with store.resumable_writer(digest, len(data)) as other:
            assert other.written == 0 and other.path != partial
            other.write(data)
        assert store.clean_tmp(older_than=-1) == 0 and partial.exists()
        w.write(data[100_000:])
    assert store.read(digest) == data and not list((tmp_path / "tmp").iterdir())
    # bytes that do not check out are not kept for another try
    with pytest.raises(DigestMismatch), store.resumable_writer(sha256_digest(b"x" * 10), 10) as w:
        w.write(b"y" * 10)
    assert not list((tmp_path / "tmp").iterdir())
    # a partial nobody holds, older than a day, goes at the next GC
    with pytest.raises(ConnectionError), store.resumable_writer(sha256_digest(b"z" * 10), 10) as w:
        w.write(b"z" * 5)
        raise ConnectionError
    (stale,) = (tmp_path / "tmp").glob("partial-*")
    assert store.clean_tmp() == 0
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    assert store.clean_tmp() == 1 and not stale.exists()


def test_content_store_verifies_and_never_shows_partial_blobs(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content", tmp_path / "tmp")
    data = b"hello" * 1000
    digest = sha256_digest(data)
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        store.ingest([data[:-1], b"X"], digest, len(data))
    with pytest.raises(DigestMismatch, match="larger than its announced size"):
        store.ingest([data, b"more"], digest, len(data))
    assert not store.exists(digest) and list(store.walk()) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # aborted writers clean up after themselves
    with store.writer(digest, len(data)) as w:
        w.write(data[:100])
        w.flush()
        assert not store.exists(digest)  # half-written: only a temp file
        w.write(data[100:])
    assert store.read(digest) == data and list(store.walk()) == [digest]
    assert store.path(digest).stat().st_mode & 0o777 == 0o444


def test_snapshotter_lifecycle(tmp_path: Path) -> None:
    home = Home.open(tmp_path / "home")
    snaps = OverlaySnapshotter(home.sub("snapshots"), MetadataDB(home.db_path))
    (m,) = snaps.prepare("base-extract")
    assert m.type == "bind" and m.option("rw") == ""
    (Path(m.source) / "file").write_text("base")
    snaps.commit("base", "base-extract", labels={"k": "v"})
    info = snaps.stat("base")
    assert info.kind is Kind.COMMITTED and info.labels == {"k": "v"} and info.ownership == "unshifted"
    with pytest.raises(AlreadyExists):
        snaps.prepare("base")
    with pytest.raises(NotFound):
        snaps.prepare("x", "missing-parent")
    (ov,) = snaps.prepare("ctr", "base")
    assert ov.type == "overlay"
    assert ov.option("lowerdir") == str(snaps.dir("base"))
    assert ov.option("upperdir") == str(snaps.dir("ctr")) and ov.option("workdir")
    with pytest.raises(FailedPrecondition, match="not committed"):
        snaps.prepare("child-of-active", "ctr")
    with pytest.raises(FailedPrecondition, match="has children"):
        snaps.remove("base")
    assert {i.key for i in snaps.walk()} == {"base", "ctr"}
    assert snaps.usage("base").inodes == 2 and snaps.usage("base").size > 0
    if os.geteuid() == 0:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "overlay", ov.source, "-o", ",".join(ov.options), str(mnt)], check=True)
        try:
            (mnt / "new").write_text("upper")
            assert (mnt / "file").read_text() == "base"
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        assert (snaps.dir("ctr") / "new").read_text() == "upper"
        assert not (snaps.dir("base") / "new").exists()
    snaps.remove("ctr")
    snaps.remove("base")
    assert list(snaps.walk()) == []
    assert [p.name for p in (home.root / "snapshots").iterdir()] == []


def test_image_help_is_fast_and_lazy() -> None:
    code = ("import sys; from flex.cli.main import main; rc = main(['image', '--help']); "
            "heavy = [m for m in ('httpx', 'zstandard', 'sqlite3', 'flex.runtime.remotes.registry') "
            "if m in sys.modules]; "
            "print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert "pull" in out.stdout and "bootstrap" in out.stdout
