"""Features build benchmark (issue 13): `flex build` vs. the reference CLI's `devcontainer build` (on podman,
its non-BuildKit path), side by side in one run, on the same base image and devcontainer.json: the cached
Debian minbase plus three local features (c depends on a; each writes a file). Runs interleaved, medians:

  cold       nothing cached (flex --no-cache; the reference --no-cache)
  unchanged  nothing changed (the reference rebuilds its feature layers here: devcontainers/cli #313, #1262)
  option     one feature's option changed: flex reruns that feature and those after it (checked)

Run as root: .venv/bin/python bench/features.py [--runs N]. Whole processes are timed (start-up included).
"""

from __future__ import annotations

import argparse
import json
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
REFERENCE = REPO / ".cache" / "devcontainers-cli" / "node_modules" / ".bin" / "devcontainer"


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/", stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stderr


def _workspace(ws: Path, base: str, n: int) -> None:
    dc = ws / ".devcontainer"
    for name, meta in {"a": {}, "b": {}, "c": {"dependsOn": {"./a": {}}}}.items():
        (dc / name).mkdir(parents=True, exist_ok=True)
        (dc / name / "devcontainer-feature.json").write_text(json.dumps(
            {"id": name, "version": "1.0.0", "options": {"n": {"type": "string", "default": "0"}}, **meta}))
        (dc / name / "install.sh").write_text(f'#!/bin/sh\necho "{name} $N" > /feature-{name}\n')
    (dc / "devcontainer.json").write_text(json.dumps({"image": base, "features": {"./b": {"n": str(n)},
                                                                                  "./c": {}}}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    if shutil.which("podman") is None or not REFERENCE.exists():
        print("podman and the reference CLI are needed (installer/install.sh --dev)", file=sys.stderr)
        return 2
    from tests.conftest import debian_rootfs_tar
    from tests.runtime.build.conftest import _STORE_BASE

    work = Path(tempfile.mkdtemp(prefix="flex-bench-features-", dir="/var/tmp"))
    work.chmod(0o755)
    podman_opts = ["--root", str(work / "pm-storage"), "--runroot", str(work / "pm-run")]
    try:
        env = {**os.environ, "FLEX_HOME": str(work / "home"), "PYTHONPATH": str(REPO), "HOME": str(work)}
        flex = [sys.executable, "-m", "flex"]
        tar = debian_rootfs_tar()
        subprocess.run([sys.executable, "-c", _STORE_BASE, str(tar), "bench/minbase:1"], env=env, check=True,
                       capture_output=True)
        subprocess.run(["podman", *podman_opts, "import", "-q", str(tar), "localhost/bench/minbase:1"], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        podman = work / "podman"
        podman.write_text(f"#!/bin/sh\nexec podman {' '.join(podman_opts)} \"$@\"\n")
        podman.chmod(0o755)
        mine, theirs = work / "ws-flex", work / "ws-ref"
        flex_build = [*flex, "build", "--workspace-folder", str(mine), "--no-lockfile"]
        ref_build = [str(REFERENCE), "build", "--workspace-folder", str(theirs), "--docker-path", str(podman),
                     "--no-lockfile"]
        results: dict[str, dict[str, list[float]]] = {c: {"flex": [], "reference": []} for c in
                                                        ("cold", "unchanged", "option")}
        for i in range(args.runs):
            _workspace(mine, "bench/minbase:1", 0)
            _workspace(theirs, "localhost/bench/minbase:1", 0)
            results["cold"]["flex"].append(_run([*flex_build, "--no-cache"], env)[0])
            results["cold"]["reference"].append(_run([*ref_build, "--no-cache"], env)[0])
            took, err = _run(flex_build, env)
            if any(line.startswith("Dockerfile.extended:") and "(cached)" not in line for line in err.splitlines()):
                raise SystemExit(f"unchanged: expected every step cached:\n{err}")
            results["unchanged"]["flex"].append(took)
            results["unchanged"]["reference"].append(_run(ref_build, env)[0])
            _workspace(mine, "bench/minbase:1", i + 1)
            _workspace(theirs, "localhost/bench/minbase:1", i + 1)
            took, err = _run(flex_build, env)
            ran = [line for line in err.splitlines() if line.startswith("Dockerfile.extended:")
                   and "(cached)" not in line and "install.sh" in line]
            if len(ran) != 2:  # b (the changed one) and c after it; a before it is reused
                raise SystemExit(f"option changed: expected b and c to run again, got {ran}")
            results["option"]["flex"].append(took)
            results["option"]["reference"].append(_run(ref_build, env)[0])
        print(f"{'case':<12}{'flex s':>10}{'reference s':>14}{'ratio':>8}   (medians of {args.runs}, as root)")
        for case, r in results.items():
            f, b = statistics.median(r["flex"]), statistics.median(r["reference"])
            print(f"{case:<12}{f:>10.2f}{b:>14.2f}{f / b:>8.2f}")
        return 0
    finally:
        for pid_file in work.glob("home/run/*.pid"):
            subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=False)
        subprocess.run(["podman", *podman_opts, "system", "reset", "-f"], capture_output=True,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
