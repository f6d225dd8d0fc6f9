"""Benchmark: flex.backup against restic, side by side in one run, on the same tree and the same stores.

The tree (>= 1 GiB): a Debian rootfs (the tests' cached mmdebstrap tars, or a fresh mmdebstrap run), a
source tree of many small text files, and some large random binaries. For each store (a local directory;
S3 on a `weed mini` started here on 127.0.0.1) and each tool, in this order:

  full backup  |  nothing changed  |  1% of files changed  |  full restore  |  repository size

Times are wall clock of a fresh process (restic's CLI; flex through this script's --child mode, which runs
the library as `flex backup` would); peak memory is that process's max RSS. Targets (issue 17): each time
<= 1.0x restic, size <= 1.1x restic, peak memory <= restic's. Run as root:

    .venv/bin/python bench/backup.py [--dir /var/tmp] [--stores local,s3] [--small 40000] [--big 4]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "bench-password"
S3_KEY, S3_SECRET = "benchadmin", "bench-secret-key"
WORDS = ["def", "class", "return", "import", "self", "value", "for", "in", "if", "else", "while", "yield",
         "async", "await", "with", "as", "try", "except", "lambda", "None", "True", "False", "pass", "break",
         "continue", "from", "global", "nonlocal", "assert", "del", "raise", "or", "and", "not", "is"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rootfs_tars() -> list[Path]:
    cache = Path(os.environ.get("FLEX_TEST_CACHE", REPO / ".cache" / "test"))
    return sorted(cache.glob("rootfs-bookworm-*.tar"), key=lambda p: p.stat().st_size)


def make_tree(root: Path, small: int, big: int) -> int:
    rng = random.Random(17)
    tars = _rootfs_tars()
    if not tars:
        out = root.parent / "minbase.tar"
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar", "bookworm", str(out)], check=True)
        tars = [out]
    for i, tar in enumerate(tars[-2:]):  # the largest two cached rootfs (minbase, minbase + packages)
        dest = root / f"rootfs{i}"
        dest.mkdir(parents=True)
        with tarfile.open(tar) as tf:
            tf.extractall(dest, filter="fully_trusted")
    src = root / "src"
    for i in range(small):
        d = src / f"pkg{i // 500}" / f"mod{i // 50}"
        if i % 50 == 0:
            d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(20, 2000)
        (d / f"file{i}.py").write_text(" ".join(rng.choices(WORDS, k=n)) + "\n")
    (root / "bin").mkdir()
    for i in range(big):
        with open(root / "bin" / f"blob{i}.bin", "wb") as f:
            for _ in range(200):
                f.write(os.urandom(1 << 20))
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def change_one_percent(root: Path, round_: int) -> int:
    files = sorted(p for p in (root / "src").rglob("*.py"))
    for p in files[round_::100]:
        with open(p, "a") as f:
            f.write(f"# changed {round_}\n")
    big = sorted((root / "bin").glob("*.bin"))
    if big:  # a 1% change inside one large binary too
        with open(big[0], "r+b") as f:
            f.seek(50 << 20)
            f.write(os.urandom(2 << 20))
    return len(files[round_::100])


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    if proc.stderr:
        proc.stderr.close()
    return took, ru.ru_maxrss * 1024


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def child(op: str, location: str, path: str) -> None:
    """One flex operation in this process, as the CLI runs it."""
    from flex.backup import Repository, backup, lock, open_store, restore

    repo = Repository.open_or_init(open_store(location), PASSWORD.encode())
    if op == "backup":
        snaps = repo.snapshots()
        with lock(repo):
            backup(repo, {"tree": Path(path)}, parent=snaps[-1] if snaps else None)
    else:
        restore(repo, repo.snapshots()[-1], Path(path))
    repo.close()


def _weed(work: Path) -> tuple[subprocess.Popen[bytes], str, object]:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = [_port() for _ in range(5)]
    d = work / "weed"
    d.mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={ports[0]}",
         f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", f"-s3.port={ports[3]}", f"-admin.port={ports[4]}",
         "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from minio import Minio

    client = Minio(f"127.0.0.1:{ports[3]}", access_key=S3_KEY, secret_key=S3_SECRET, secure=False, region="us-east-1")
    for _ in range(300):
        try:
            client.list_buckets()
            break
        except Exception:
            time.sleep(0.1)
    for b in ("flex-bench", "restic-bench"):
        client.make_bucket(b)
    return proc, f"http://127.0.0.1:{ports[3]}", client


def _bucket_size(client: object, bucket: str) -> int:
    return sum(int(o.size or 0) for o in client.list_objects(bucket, recursive=True))  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--small", type=int, default=40000, help="small source files")
    ap.add_argument("--big", type=int, default=4, help="200 MiB random binaries")
    ap.add_argument("--child", nargs=3, metavar=("OP", "LOCATION", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (installer/install.sh --dev)")
    work = Path(tempfile.mkdtemp(prefix="flex-bench-backup-", dir=args.dir))
    weed = None
    try:
        tree = work / "tree"
        size = make_tree(tree, args.small, args.big)
        nfiles = sum(1 for _ in tree.rglob("*"))
        print(f"tree: {size / 2**30:.2f} GiB in {nfiles} entries; load {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "AWS_ACCESS_KEY_ID": S3_KEY,
               "AWS_SECRET_ACCESS_KEY": S3_SECRET, "RESTIC_CACHE_DIR": str(work / "restic-cache"),
               "PYTHONPATH": str(REPO)}
        rows: list[tuple[str, str, float, int, float, int]] = []
        for store in args.stores.split(","):
            if store == "s3":
                weed, url, client = _weed(work)
                loc = {"flex": f"s3:{url}/flex-bench", "restic": f"s3:{url}/restic-bench"}
            else:
                loc = {"flex": str(work / "flex-repo"), "restic": str(work / "restic-repo")}
            subprocess.run(["restic", "-r", loc["restic"], "init", "--repository-version", "2"], env=env,
                           check=True, capture_output=True)
            flex_cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
            for step in ("full backup", "nothing changed", "1% changed", "full restore"):
                if step == "1% changed":
                    change_one_percent(tree, 1)
                figures = {}
                for tool in ("flex", "restic"):
                    if step == "full restore":
                        out = work / f"restore-{tool}-{store}"
                        argv = [*flex_cmd, "restore", loc["flex"], str(out)] if tool == "flex" else \
                            ["restic", "-r", loc["restic"], "restore", "latest", "--target", str(out)]
                    else:
                        argv = [*flex_cmd, "backup", loc["flex"], str(tree)] if tool == "flex" else \
                            ["restic", "-r", loc["restic"], "backup", "-q", str(tree)]
                    subprocess.run(["sync"], check=True)
                    figures[tool] = _run(argv, env)
                    if step == "full restore":
                        shutil.rmtree(out)
                (ft, fm), (rt, rm) = figures["flex"], figures["restic"]
                rows.append((store, step, ft, fm, rt, rm))
                print(f"{store:6} {step:16} flex {ft:7.2f} s {fm / 2**20:6.0f} MiB | restic {rt:7.2f} s "
                      f"{rm / 2**20:6.0f} MiB | time {ft / rt:.2f}x  memory {fm / rm:.2f}x", flush=True)
            if store == "s3":
                fs, rs = _bucket_size(client, "flex-bench"), _bucket_size(client, "restic-bench")
            else:
                fs, rs = _du(Path(loc["flex"])), _du(Path(loc["restic"]))
            print(f"{store:6} {'repository size':16} flex {fs / 2**20:9.0f} MiB | restic {rs / 2**20:9.0f} MiB | "
                  f"size {fs / rs:.2f}x", flush=True)
        print(f"load at the end {os.getloadavg()[0]:.1f}")
    finally:
        if weed is not None:
            weed.send_signal(signal.SIGINT)
            weed.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
