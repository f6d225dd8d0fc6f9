"""Pull images built by umoci and pushed by skopeo from a real docker-registry; the unpacked rootfs must
equal `umoci unpack` of the same image, byte for byte, with owners, modes, xattrs and mtimes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flex.runtime.base.home import Home
from flex.runtime.base.overlayfs import mount_overlay
from flex.runtime.images.store import Image, ImageStore
from flex.runtime.transfer.pull import pull

from .conftest import RegistryServer, run, skopeo_push, umoci_image_from_dirs
from .treecmp import describe, diff

pytestmark = [pytest.mark.registry, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, chown)")]

# security.capability v2: cap_net_raw (13) permitted + effective
CAP_NET_RAW = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
T0 = 1_600_000_000


def _file(path: Path, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def state_one(root: Path) -> None:
    root.mkdir()
    _file(root / "etc/passwd", b"root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n")
    _file(root / "etc/shadow", b"root:*:1::::::\n", 0o640, 0, 42)
    _file(root / "usr/bin/su", b"\x7fELF setuid", 0o4755)
    _file(root / "usr/bin/wall", b"\x7fELF setgid", 0o2755, 0, 5)
    _file(root / "usr/bin/ping", b"\x7fELF ping", 0o755)
    os.setxattr(root / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    _file(root / "usr/share/doc/a.txt", b"A" * 100_000, 0o644, 1000, 1000, T0 + 5)
    os.setxattr(root / "usr/share/doc/a.txt", "user.comment", b"hello")
    os.link(root / "usr/share/doc/a.txt", root / "usr/share/doc/hardlink.txt")
    _file(root / "home/user/.profile", b"export X=1\n", 0o600, 1000, 1000)
    os.chown(root / "home/user", 1000, 1000)
    os.chmod(root / "home/user", 0o750)
    _file(root / "home/user/dir/nested/deep.txt", b"deep", 0o644, 1000, 1000)
    _file(root / "opt/tool/old.txt", b"old", 0o644)
    _file(root / "opt/file-then-dir", b"file", 0o644)
    _file(root / "srv/name with spaces ü.txt", b"unicode", 0o644)
    os.symlink("usr/lib", root / "lib")
    (root / "usr/lib").mkdir()
    os.symlink("/usr/share/zoneinfo/UTC", root / "etc/localtime")
    os.mkfifo(root / "etc/fifo", 0o600)
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "var/empty").mkdir(parents=True)
    os.chmod(root / "var/empty", 0o700)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)


def state_two(one: Path, root: Path) -> None:
    run("cp", "-a", str(one), str(root))
    (root / "etc/shadow").unlink()  # → whiteout
    shutil.rmtree(root / "home/user/dir")  # → whiteouts of a whole tree
    shutil.rmtree(root / "opt/tool")
    _file(root / "opt/tool/new.txt", b"new", 0o644)  # dir recreated with other content
    (root / "opt/file-then-dir").unlink()
    _file(root / "opt/file-then-dir/inside", b"now a dir", 0o644)
    os.chmod(root / "usr/bin/ping", 0o750)
    os.setxattr(root / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    (root / "lib").unlink()
    _file(root / "lib", b"symlink became a file", 0o644)
    _file(root / "usr/share/doc/b.txt", b"B", 0o644, 33, 33, T0 + 9)


@contextlib.contextmanager
def mounted(store: ImageStore, image: Image, where: Path) -> Iterator[Path]:
    """Mount the image's layers read-only, as a container stacks them (its lower dirs, top first)."""
    top = image.top_snapshot
    assert top is not None
    lowers = store.snapshots.lowers(top)
    where.mkdir(parents=True, exist_ok=True)
    if len(lowers) == 1:  # an overlay needs two lower dirs when it has no upper one
        run("mount", "--bind", "-o", "ro", str(lowers[0]), str(where))
    else:
        mount_overlay(where, lowers, options=("ro",))
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture(scope="module")
def two_layer_image(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("img")
    state_one(work / "s1")
    state_two(work / "s1", work / "s2")
    layout = umoci_image_from_dirs(work, [work / "s1", work / "s2"])
    skopeo_push(layout, "test", registry, "flex/two:1")
    run("skopeo", "copy", "--quiet", "--dest-compress", "--dest-compress-format=zstd", f"oci:{layout}:test",
        f"oci:{work / 'zstd'}:test")
    skopeo_push(work / "zstd", "test", registry, "flex/two:zstd")
    skopeo_push(layout, "test", registry, "flex/two:v2s2", "--format=v2s2")  # Docker schema 2 media types
    run("umoci", "unpack", "--image", f"{layout}:test", str(work / "expected"))
    return work / "expected" / "rootfs", f"{registry.host}/flex/two"


def test_pull_matches_umoci_unpack(flex_home: Path, two_layer_image: tuple[Path, str], tmp_path: Path) -> None:
    expected, repo = two_layer_image
    store = ImageStore(Home.open())
    image = pull(store, f"{repo}:1")
    assert image.name == f"{repo}:1"
    assert len(image.manifest.layers) == 2
    with mounted(store, image, tmp_path / "mnt") as root:
        problems = diff(describe(expected), describe(root))
    assert problems == []
    # whiteouts are overlay char devices in the layer directory
    top = store.snapshots.lowers(image.top_snapshot or "")[0]
    assert stat.S_ISCHR(os.lstat(top / "etc/shadow").st_mode)


def test_pull_zstd_layers_and_shared_snapshots(flex_home: Path, two_layer_image: tuple[Path, str],
                                               tmp_path: Path) -> None:
    expected, repo = two_layer_image
    store = ImageStore(Home.open())
    gz = pull(store, f"{repo}:1")
    zst = pull(store, f"{repo}:zstd")
    assert {lay.media_type for lay in zst.manifest.layers} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert gz.manifest_digest != zst.manifest_digest
    assert gz.chain_ids == zst.chain_ids  # same diff_ids → the same snapshots, unpacked once
    assert len([i for i in store.snapshots.walk() if i.kind.value == "committed"]) == 2
    with mounted(store, zst, tmp_path / "mnt") as root:
        assert diff(describe(expected), describe(root)) == []


def test_pull_docker_schema2(flex_home: Path, two_layer_image: tuple[Path, str], tmp_path: Path) -> None:
    expected, repo = two_layer_image
    store = ImageStore(Home.open())
    image = pull(store, f"{repo}:v2s2")
    assert image.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert {lay.media_type for lay in image.manifest.layers} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    with mounted(store, image, tmp_path / "mnt") as root:
        assert diff(describe(expected), describe(root)) == []


def test_cli_pull_ls_inspect_rm_prune(flex_home: Path, two_layer_image: tuple[Path, str], flex: object) -> None:
    from tests.conftest import run_flex

    _, repo = two_layer_image
    res = run_flex("image", "pull", f"{repo}:1")
    assert res.code == 0, res.stderr
    assert "pulled" in res.stderr  # one line per step without a terminal
    ls = json.loads(run_flex("image", "ls", "--json").stdout)
    assert [i["name"] for i in ls] == [f"{repo}:1"]
    info = json.loads(run_flex("image", "inspect", f"{repo}:1", "--json").stdout)
    assert info["digest"] == ls[0]["digest"] and len(info["layers"]) == 2
    assert run_flex("image", "rm", f"{repo}:1").code == 0
    assert json.loads(run_flex("image", "ls", "--json").stdout) == []
    res = run_flex("image", "prune")
    assert res.code == 0 and "removed 4 blob(s), 2 snapshot(s)" in res.stdout, res.stdout
    assert list(Path(flex_home, "content", "blobs", "sha256").iterdir()) == []
    missing = run_flex("image", "inspect", f"{repo}:1")
    assert missing.code == 3 and missing.stderr.startswith("error: image"), missing.stderr


def test_pull_errors_are_clear(flex_home: Path, registry: RegistryServer) -> None:
    from tests.conftest import run_flex

    res = run_flex("image", "pull", f"{registry.host}/flex/nope:1")
    assert res.code == 3
    assert "not found" in res.stderr and "Traceback" not in res.stderr
    res = run_flex("image", "pull", "Bad Ref")
    assert res.code == 7 and "invalid" in res.stderr
    res = run_flex("image", "pull", f"127.0.0.1:{_closed_port()}/x:1")
    assert res.code == 6 and "hint:" in res.stderr


def _closed_port() -> int:
    from .conftest import free_port

    return free_port()


def test_corrupted_blob_is_refused_and_nothing_is_kept(flex_home: Path, registry: RegistryServer,
                                                      tmp_path: Path) -> None:
    """Flip bytes of a layer in the registry's own storage: the pull fails with a digest mismatch,
    lists nothing and commits no snapshot (the layer was being unpacked while it downloaded)."""
    from tests.conftest import run_flex

    state = tmp_path / "state"
    _file(state / "data.bin", os.urandom(300_000), 0o644)
    layout = umoci_image_from_dirs(tmp_path, [state])
    skopeo_push(layout, "test", registry, "flex/corrupt:1")
    manifest = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry.host}/flex/corrupt:1").stdout)
    digest = manifest["layers"][0]["digest"].split(":")[1]
    data = registry.root / "storage/docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    res = run_flex("image", "pull", f"{registry.host}/flex/corrupt:1")
    assert res.code == 7, res.stderr
    assert "digest mismatch" in res.stderr or "corrupt" in res.stderr, res.stderr
    assert json.loads(run_flex("image", "ls", "--json").stdout) == []
    store = ImageStore(Home.open())
    assert [i.key for i in store.snapshots.walk()] == []
    assert not store.content.exists("sha256:" + digest)


def _push_multi_platform(registry: RegistryServer, tmp_path: Path, repo: str) -> tuple[str, str, str]:
    """An index of two single-layer images, this host's and another architecture's, each with /etc/arch
    naming its architecture → (index digest, host arch, other arch)."""
    from flex.runtime.images.store import host_platform

    host = host_platform()["architecture"]
    other = "arm64" if host != "arm64" else "amd64"
    layout = tmp_path / "layout"
    for arch in (host, other):
        state = tmp_path / f"state-{arch}"
        _file(state / "etc/arch", arch.encode())
        umoci_image_from_dirs(tmp_path / arch, [state], tag=arch)
        run("skopeo", "copy", "--quiet", f"oci:{tmp_path / arch / 'layout'}:{arch}", f"oci:{layout}:{arch}")
        run("umoci", "config", "--image", f"{layout}:{arch}", "--architecture", arch)
    index = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": by_tag[a]["mediaType"], "digest": by_tag[a]["digest"], "size": by_tag[a]["size"],
         "platform": {"os": "linux", "architecture": a}} for a in (other, host)]}
    data = json.dumps(nested).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    index["manifests"].append({"mediaType": nested["mediaType"], "digest": f"sha256:{digest}", "size": len(data),
                               "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(index))
    run("skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi",
        f"docker://{registry.host}/{repo}")
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{other}",
        f"docker://{registry.host}/{repo}-{other}")
    return f"sha256:{digest}", host, other


def test_multi_platform_index_resolves_to_the_host(flex_home: Path, registry: RegistryServer,
                                                   tmp_path: Path) -> None:
    from tests.conftest import run_flex

    digest, host, _ = _push_multi_platform(registry, tmp_path, "flex/multi:1")
    res = run_flex("image", "pull", f"{registry.host}/flex/multi:1")
    assert res.code == 0, res.stderr
    info = json.loads(run_flex("image", "inspect", f"{registry.host}/flex/multi:1", "--json").stdout)
    assert info["target"] == digest and info["platform"] == f"linux/{host}"
    assert (Path(info["lowerdirs"][0]) / "etc/arch").read_text() == host


def test_pull_platform(flex_home: Path, registry: RegistryServer, tmp_path: Path) -> None:
    """`--platform` picks another image of an index; a single-platform image of another platform, an
    index without the platform and a malformed platform are each one clear line."""
    from tests.conftest import run_flex

    digest, _, other = _push_multi_platform(registry, tmp_path, "flex/multiplat:1")
    ref = f"{registry.host}/flex/multiplat:1"
    res = run_flex("image", "pull", "--platform", f"linux/{other}", ref)
    assert res.code == 0, res.stderr
    info = json.loads(run_flex("image", "inspect", ref, "--json").stdout)
    assert info["target"] == digest and info["platform"] == f"linux/{other}"
    assert (Path(info["lowerdirs"][0]) / "etc/arch").read_text() == other
    res = run_flex("image", "pull", "--platform", "linux/s390x", ref)
    assert res.code == 3 and "no image for linux/s390x" in res.stderr, res.stderr
    single = f"{registry.host}/flex/multiplat:1-{other}"
    assert run_flex("image", "pull", "--platform", f"linux/{other}", single).code == 0
    res = run_flex("image", "pull", "--platform", "linux/s390x", single)
    assert res.code == 3 and f"the image is linux/{other}" in res.stderr, res.stderr
    res = run_flex("image", "pull", "--platform", "arm64", ref)
    assert res.code == 7 and "invalid platform 'arm64'" in res.stderr and "Traceback" not in res.stderr
