"""Benchmark: pull + unpack of the Debian minbase image from a local docker-registry.

Side by side in one run, against named anchors:
  flex image pull REF                       vs  skopeo copy docker://REF oci:DIR + umoci unpack   (target <= 0.5x)
                                            and podman pull REF (fresh overlay storage each run: fetch +
                                            unpack into its layer store, as flex's pull does)
  unpack of the layer alone (flex, in-process) vs  tar -xzf of the same layer blob                 (target <= 1.5x)

The image is mmdebstrap's minbase (the tests' cache, .cache/test, or a fresh mmdebstrap run), stored
with flex's bootstrap and pushed to a registry started here on 127.0.0.1. What each step unpacks is kept
until the end: on an ext4 without a journal (this VM's disk) the kernel does not reuse an inode freed in the
last minutes, and its search past each one (``recently_deleted``, ~200 µs of system time per file created
after a large delete) would make every step pay for the deletes of the step before it. Run as root:
    .venv/bin/python bench/pull.py [--runs 3] [--dir /dev/shm]    (default: /var/tmp, this VM's disk)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _minbase_tar(work: Path) -> Path:
    cache = Path(os.environ.get("FLEX_TEST_CACHE", REPO / ".cache" / "test"))
    tars = sorted(cache.glob("rootfs-bookworm-minbase-*.tar"), key=lambda p: p.stat().st_size)
    if tars:
        return tars[0]  # the smallest: plain minbase without extra packages
    out = work / "minbase.tar"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=auto", "--format=tar", "bookworm",
                    str(out)], check=True)
    return out


def _registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _port()
    (work / "storage").mkdir()
    cfg = work / "registry.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                   f"    rootdirectory: {work / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("docker-registry did not start")


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _settle() -> None:
    """Nothing of the step before is left to write back when the next one starts."""
    subprocess.run(["sync"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp",
                    help="where stores and unpacks go (e.g. /dev/shm to take the disk out of the figures)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (umoci unpack and flex keep in-image owners)")
    from flex.runtime.base.home import Home
    from flex.runtime.images.store import ImageStore
    from flex.runtime.transfer.bootstrap import image_from_rootfs_tar
    from flex.runtime.transfer.push import push
    from flex.runtime.unpack.unpacker import apply_layer_file

    work = Path(tempfile.mkdtemp(prefix="flex-bench-pull-", dir=args.dir))
    graphs: list[Path] = []
    reg, host = _registry(work)
    try:
        tar = _minbase_tar(work)
        store = ImageStore(Home.open(work / "seed"))
        img = image_from_rootfs_tar(store, tar, "bench/minbase:1")
        ref = f"{host}/bench/minbase:1"
        push(store, img.name, ref)
        layer = store.content.path(img.manifest.layers[0].digest)
        print(f"image: {ref} ({img.manifest_digest[:19]}), layer {layer.stat().st_size / 1e6:.1f} MB gzip, "
              f"{tar.stat().st_size / 1e6:.1f} MB tar")
        flex_t, anchor_t, podman_t, unpack_t, tar_t = [], [], [], [], []
        have_podman = shutil.which("podman") is not None
        for i in range(args.runs):
            home = work / f"home{i}"
            _settle()
            flex_t.append(_timed([sys.executable, "-m", "flex", "image", "pull", "-q", ref], {"FLEX_HOME": str(home)}))
            oci, bundle = work / f"oci{i}", work / f"bundle{i}"
            _settle()
            anchor_t.append(_timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                                    f"oci:{oci}:x"]) + _timed(["umoci", "unpack", "--image", f"{oci}:x", str(bundle)]))
            if have_podman:
                graph, run = work / f"podman-graph{i}", work / f"podman-run{i}"
                podman = ["podman", "--root", str(graph), "--runroot", str(run), "--storage-driver", "overlay"]
                graphs.append(graph)
                _settle()
                podman_t.append(_timed([*podman, "pull", "-q", "--tls-verify=false", f"docker://{ref}"]))
            dest = work / f"unpack{i}"
            dest.mkdir()
            _settle()
            start = time.perf_counter()
            apply_layer_file(dest, layer, [])
            unpack_t.append(time.perf_counter() - start)
            dest = work / f"tar{i}"
            dest.mkdir()
            _settle()
            tar_t.append(_timed(["tar", "-xzf", str(layer), "-C", str(dest)]))
        med = statistics.median
        print(f"{'':34}{'median':>9}  runs")
        print(f"stores and unpacks in {args.dir}")
        for label, values in (("flex image pull", flex_t), ("skopeo copy + umoci unpack", anchor_t),
                              ("podman pull", podman_t), ("flex unpack (layer only)", unpack_t),
                              ("tar -xzf (same layer)", tar_t)):
            if values:
                print(f"{label:34}{med(values):8.2f}s  {' '.join(f'{v:.2f}' for v in values)}")
        print(f"pull ratio   flex / (skopeo+umoci) = {med(flex_t) / med(anchor_t):.2f}x   (target <= 0.5x)")
        if podman_t:
            print(f"pull ratio   flex / podman pull    = {med(flex_t) / med(podman_t):.2f}x")
        print(f"unpack ratio flex / tar -xzf       = {med(unpack_t) / med(tar_t):.2f}x   (target <= 1.5x)")
    finally:
        reg.terminate()
        reg.wait()
        for graph in graphs:  # podman's overlay may have left its mounts there
            subprocess.run(["umount", "-R", "-l", str(graph)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
