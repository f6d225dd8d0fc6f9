"""CPU that follows use (issue 14, point 5): two busy environments, one requesting 0.5 CPU and one 1.5,
as the runner gives them CPU (a cgroup weight proportional to the request, no quota) side by side with the
anchor, a hard quota of the request (``--cpus``, what docker and the first runner slice did).

  alone     only the 0.5-CPU container is busy: with a weight it bursts into the idle CPUs; a quota holds
            it to 0.5
  together  both are busy: with a weight they split the machine about 1:3, as their requests

Figures are CPU-seconds per second from each container's cpuacct counter over a few seconds. On a machine
others use at the same time they move with that load: read the ratios, and run it on a quiet machine for
figures. Run as root: .venv/bin/python bench/runner_cpu.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BUSY = ["/bin/sh", "-c", "while :; do :; done"]


def usage(cgroup: str) -> float:
    from flex.runtime.cgroups.cgroups import read_counter

    got = read_counter(cgroup, "cpuacct", "cpuacct.usage", "cpu.stat")
    if got is None:
        return 0.0
    if got.startswith("usage_usec"):  # v2
        return int(got.split()[1]) / 1e6
    return int(got) / 1e9


def measure(cgroups: list[str], seconds: float) -> list[float]:
    before = [usage(c) for c in cgroups]
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return [(usage(c) - b) / dt for c, b in zip(cgroups, before, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from tests.conftest import debian_rootfs_tar

    work = Path(tempfile.mkdtemp(prefix="flex-bench-cpu-", dir="/var/tmp"))
    work.chmod(0o755)
    os.environ["FLEX_HOME"] = str(work / "home")
    from flex.runtime.base.home import Home
    from flex.runtime.containers.create import CreateOptions, create_container
    from flex.runtime.containers.image_source import StoreImages
    from flex.runtime.containers.store import Containers
    from flex.runtime.containers.update import apply_resources
    from flex.runtime.images.store import ImageStore
    from flex.runtime.transfer.bootstrap import image_from_rootfs_tar

    image = image_from_rootfs_tar(ImageStore(Home.open()), debian_rootfs_tar(), "bench/minbase:1").name
    store = Containers(Home.open())
    images = StoreImages(store.home, store.db)
    print(f"CPUs: {len(os.sched_getaffinity(0))}; load average now: {os.getloadavg()[0]:.1f}")
    try:
        results: dict[str, dict[str, list[float]]] = {}
        for how in ("weight", "quota"):
            cs = []
            for name, cpus in (("small", 0.5), ("large", 1.5)):
                opts = CreateOptions(image=image, entrypoint=BUSY, name=f"{how}-{name}",
                                     cpus=cpus if how == "quota" else None)
                c = create_container(store, images, opts)
                if how == "weight":
                    apply_resources(store, c, cpus, None)
                cs.append(c)
            small, large = cs
            subprocess.run([sys.executable, "-m", "flex", "runtime", "start", small.id], check=True)
            cg = [str(store.get(c.id).cgroup) for c in cs]
            alone = measure(cg[:1], args.seconds)
            subprocess.run([sys.executable, "-m", "flex", "runtime", "start", large.id], check=True)
            together = measure(cg, args.seconds)
            results[how] = {"alone": alone, "together": together}
            for c in cs:
                store.remove(c.id, force=True)
        print(f"{'':10} {'weight (runner)':>28} {'quota (anchor)':>28}")
        w, q = results["weight"], results["quota"]
        wa, qa = f"small {w['alone'][0]:.2f}", f"small {q['alone'][0]:.2f}"
        print(f"{'alone':10} {wa:>28} {qa:>28}")
        ws, wl = w["together"]
        qs, ql = q["together"]
        print(f"{'together':10} {f'small {ws:.2f} large {wl:.2f}':>28} {f'small {qs:.2f} large {ql:.2f}':>28}")
        print(f"burst (alone, small): weight/quota = {w['alone'][0] / max(q['alone'][0], 1e-9):.2f}x; "
              f"together large/small: weight {wl / max(ws, 1e-9):.2f}, quota {ql / max(qs, 1e-9):.2f} "
              "(requests 3.0)")
    finally:
        for c in store.all():
            store.remove(c.id, force=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
