"""Build benchmark (issue 13): `flex image build` vs. `buildah bud --layers`, side by side in one run.

The Dockerfile is the issue's: the Debian minbase + `RUN apt-get install -y git` + `COPY . /src`, built
from the same base image by both (flex's store; buildah's, from `flex image export`), as root, with the
same host configuration given to RUN steps (flex: build.toml; buildah: the same files as read-only
`--volume`s), each side's default network. Three cases, runs interleaved, medians:

  cold       every step runs (flex --no-cache, buildah --no-cache)       target <= 0.8 x buildah
  unchanged  nothing changed: all cache hits                             target <= 0.5 s and <= 1.0 x buildah
  one file   one source file changed: only the COPY step runs again      (flex's output is checked for it)

Run as root: .venv/bin/python bench/build.py [--runs N]. Whole processes are timed (start-up included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOCKERFILE = """\
ARG BASE
FROM $BASE
RUN apt-get update -q && apt-get install -y -q --no-install-recommends git >/dev/null && rm -rf /var/lib/apt/lists/*
COPY . /src
"""
MOUNTS = [("/etc/apt/sources.list.d", "/etc/apt/sources.list.d"), ("/etc/apt/apt.conf.d", "/etc/apt/apt.conf.d"),
          ("/dev/null", "/etc/apt/sources.list"),
          ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt")]


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (root flex against root buildah)", file=sys.stderr)
        return 2
    if shutil.which("buildah") is None:
        print("buildah is not installed (installer/install.sh --dev)", file=sys.stderr)
        return 2
    from tests.conftest import debian_rootfs_tar
    from tests.runtime.build.conftest import _STORE_BASE

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "flex")], check=True)
    work = Path(tempfile.mkdtemp(prefix="flex-bench-build-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        home = work / "home"
        env = {**os.environ, "FLEX_HOME": str(home), "PYTHONPATH": str(REPO)}
        flex = [sys.executable, "-m", "flex"]
        subprocess.run([sys.executable, "-c", _STORE_BASE, str(debian_rootfs_tar()), "bench/minbase:1"], env=env,
                       check=True, capture_output=True)
        (home / "build.toml").write_text("mounts = [\n" + "".join(f'  "{s}:{d}",\n' for s, d in MOUNTS) + "]\n")
        archive = work / "base.tar"
        _run([*flex, "image", "export", "bench/minbase:1", str(archive)], env)
        bh = ["buildah", "--root", str(work / "bh-storage"), "--runroot", str(work / "bh-run"),
              "--storage-driver", "overlay"]
        _run([*bh, "pull", f"oci-archive:{archive}"], env)
        images = subprocess.run([*bh, "images", "-q"], capture_output=True, text=True, check=True).stdout.split()
        _run([*bh, "tag", images[0], "localhost/bench-minbase:1"], env)
        ctx = work / "ctx"
        (ctx / "pkg").mkdir(parents=True)
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        for i in range(50):
            (ctx / "pkg" / f"m{i}.py").write_text(f"VALUE = {i}\n" * 20)
        flex_build = [*flex, "image", "build", "-t", "bench/out:1", "--build-arg", "BASE=bench/minbase:1", str(ctx)]
        bh_build = [*bh, "bud", "--layers", "--isolation", "chroot", "--build-arg",
                    "BASE=localhost/bench-minbase:1", "-t", "localhost/bench-out:1"]
        bh_build += [a for s, d in MOUNTS for a in ("--volume", f"{s}:{d}:ro")] + [str(ctx)]
        results: dict[str, dict[str, list[float]]] = {c: {"flex": [], "buildah": []} for c in
                                                        ("cold", "unchanged", "one file")}
        for i in range(args.runs):
            results["cold"]["flex"].append(_run([*flex_build, "--no-cache"], env)[0])
            results["cold"]["buildah"].append(_run([*bh_build[:-1], "--no-cache", bh_build[-1]], env)[0])
            results["unchanged"]["flex"].append(_run(flex_build, env)[0])
            results["unchanged"]["buildah"].append(_run(bh_build, env)[0])
            (ctx / "pkg" / "m0.py").write_text(f"VALUE = {1000 + i}\n")
            took, err = _run(flex_build, env)
            if "RUN (cached)" not in err or "COPY (cached)" in err:
                raise SystemExit(f"one file changed: expected only COPY to run again:\n{err}")
            results["one file"]["flex"].append(took)
            results["one file"]["buildah"].append(_run(bh_build, env)[0])
        print(f"{'case':<12}{'flex s':>10}{'buildah s':>12}{'ratio':>8}   (medians of {args.runs}, as root)")
        for case, r in results.items():
            f, b = statistics.median(r["flex"]), statistics.median(r["buildah"])
            print(f"{case:<12}{f:>10.2f}{b:>12.2f}{f / b:>8.2f}")
        return 0
    finally:
        for pid_file in work.glob("home/run/*.pid"):
            subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=False)
        subprocess.run(["buildah", "--root", str(work / "bh-storage"), "--runroot", str(work / "bh-run"),
                        "rm", "--all"], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "bh-storage" / "overlay")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
