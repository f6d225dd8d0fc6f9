"""`flex up` benchmark (issue 16), side by side in one run against `devcontainer up --docker-path podman`, both
rootless as the user flextest, on the same folder, the same image (the Debian minbase rootfs the tests cache,
stored in flex's image store and imported into flextest's podman storage under the same name):

  first up       no environment/container yet, the image present    target: <= 0.7 x the reference
  second up      nothing changed                                    target: <= 0.3 x and < 1 s
  after a change a one-line Dockerfile edit (`RUN echo N > /edit`), then up    target: <= 0.7 x the reference
                 (flex picks the edit up by itself; the reference needs --remove-existing-container for
                 it, devcontainers/cli #651: that is what its side runs; both build the base step from cache)
  flex ls        the whole process, against the local daemon        target: <= 150 ms

flex's daemon is started before the runs (its start is printed on its own line); between first-up runs flex's
environment is removed (`flex rm`, waited for) and the reference's container with `podman rm -f`.
Run as root: .venv/bin/python bench/up.py [--runs N]. Medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
USER = "flextest"
IMAGE = "localhost/flexbench/minbase:1"
ORACLE = REPO / ".cache" / "devcontainers-cli" / "node_modules" / ".bin" / "devcontainer"


def _as_user(home: Path, *argv: str) -> list[str]:
    path = f"{REPO}:{sysconfig.get_paths()['purelib']}"
    return ["runuser", "-u", USER, "--", "env", f"FLEX_HOME={home}", f"PYTHONPATH={path}",
            f"XDG_CONFIG_HOME={home}/xdg", f"HOME={pwd.getpwnam(USER).pw_dir}", *argv]


def _run(argv: list[str], cwd: Path | str = "/") -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[-6:])} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the benchmark runs both sides as the user flextest)")
    if not ORACLE.exists() or shutil.which("podman") is None:
        raise SystemExit("needs the reference CLI and podman: installer/install.sh --dev")
    from bench.rootless_podman import overlay_config_home
    from tests.conftest import debian_rootfs_tar

    tar = debian_rootfs_tar()
    uid = pwd.getpwnam(USER).pw_uid
    base = Path(tempfile.mkdtemp(prefix="bench-up-", dir="/var/tmp"))
    os.chown(base, uid, uid)
    home, folder = base / "home", base / "bench-app"
    for d in (home, home / "xdg", folder, folder / ".devcontainer"):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, uid)
    cfg = folder / ".devcontainer" / "devcontainer.json"
    cfg.write_text(json.dumps({"image": IMAGE}))
    os.chown(cfg, uid, uid)
    df_folder = base / "bench-df"
    dockerfile = df_folder / ".devcontainer" / "Dockerfile"
    for d in (df_folder, df_folder / ".devcontainer"):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, uid)

    def edit(n: int) -> None:
        dockerfile.write_text(f"FROM {IMAGE}\nRUN echo {n} > /edit\n")
        os.chown(dockerfile, uid, uid)

    edit(0)
    (df_folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"build": {"dockerfile": "Dockerfile"}}))
    os.chown(df_folder / ".devcontainer" / "devcontainer.json", uid, uid)
    # the venv's interpreter if flextest may run it, else the system python3 with the venv's packages
    py = sys.executable
    if subprocess.run(["runuser", "-u", USER, "--", py, "-c", "pass"], capture_output=True).returncode != 0:
        py = "/usr/bin/python3"
    flex = [py, "-m", "flex"]
    # podman and the reference CLI in the user's own clean environment (a root login's XDG_RUNTIME_DIR is not theirs)
    podman_xdg = overlay_config_home(base, uid)  # podman's overlay driver, like flex's (not vfs)
    as_user = ["runuser", "-u", USER, "--", "env", "-i", f"HOME={pwd.getpwnam(USER).pw_dir}", f"USER={USER}",
               f"XDG_CONFIG_HOME={podman_xdg}",
               "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"]
    oracle = [*as_user, str(ORACLE), "up",
              "--docker-path", "podman", "--workspace-folder", str(folder)]
    code = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
            "from flex.runtime.images.store import ImageStore; from flex.runtime.unpack.userns import store_ownership; "
            "from flex.runtime.transfer.bootstrap import image_from_rootfs_tar; "
            "image_from_rootfs_tar(ImageStore(Home.open(), ownership=store_ownership()), Path(sys.argv[1]), "
            "sys.argv[2])")
    _run(_as_user(home, py, "-c", code, str(tar), IMAGE))
    _run([*as_user, "podman", "import", str(tar), IMAGE])
    try:
        print(f"flex daemon start: {_run(_as_user(home, *flex, 'daemon', 'start')):.2f} s (once, before the runs)")
        first: dict[str, list[float]] = {"flex": [], "ref": []}
        second: dict[str, list[float]] = {"flex": [], "ref": []}
        for _ in range(args.runs):
            first["flex"].append(_run(_as_user(home, *flex, "up", str(folder))))
            second["flex"].append(_run(_as_user(home, *flex, "up", str(folder))))
            first["ref"].append(_run(oracle))
            second["ref"].append(_run(oracle))
            _run(_as_user(home, *flex, "rm", "bench-app"))
            while subprocess.run(_as_user(home, *flex, "show", "bench-app"), capture_output=True).returncode == 0:
                time.sleep(0.1)
            ids = subprocess.run([*as_user, "podman", "ps", "-aq", "--filter",
                                  f"label=devcontainer.local_folder={folder}"], capture_output=True, text=True)
            for cid in ids.stdout.split():
                _run([*as_user, "podman", "rm", "-f", cid])
        # after a Dockerfile edit: both sides up once (untimed), then edit, up, edit, up...
        ref_df = [*as_user, str(ORACLE), "up", "--docker-path", "podman", "--workspace-folder", str(df_folder),
                  "--remove-existing-container"]
        _run(_as_user(home, *flex, "up", str(df_folder)))
        _run(ref_df)
        changed: dict[str, list[float]] = {"flex": [], "ref": []}
        for i in range(args.runs):
            edit(2 * i + 1)
            changed["flex"].append(_run(_as_user(home, *flex, "up", str(df_folder))))
            edit(2 * i + 2)
            changed["ref"].append(_run(ref_df))
        _run(_as_user(home, *flex, "up", str(folder)))
        ls = [_run(_as_user(home, *flex, "ls")) for _ in range(max(5, args.runs))]
        print(f"{'rootless, medians of ' + str(args.runs):<28} {'flex':>9} {'reference':>10} {'ratio':>7}  target")
        for label, runs, target in (("first up (image present)", first, "<= 0.7x"),
                                    ("second up (unchanged)", second, "<= 0.3x, < 1 s"),
                                    ("up after a Dockerfile edit", changed, "<= 0.7x")):
            f, r = statistics.median(runs["flex"]), statistics.median(runs["ref"])
            print(f"{label:<28} {f:>8.2f}s {r:>9.2f}s {f / r:>6.2f}x  {target}")
        print(f"{'flex ls (whole process)':<28} {statistics.median(ls) * 1000:>7.0f}ms {'':>10} {'':>7}  <= 150 ms")
    finally:
        for env in ("bench-app", "bench-df"):
            subprocess.run(_as_user(home, *flex, "rm", env), capture_output=True)
        for f in (folder, df_folder):
            ids = subprocess.run([*as_user, "podman", "ps", "-aq", "--filter", f"label=devcontainer.local_folder={f}"],
                                 capture_output=True, text=True)
            for cid in ids.stdout.split():
                subprocess.run([*as_user, "podman", "rm", "-f", cid], capture_output=True)
        subprocess.run(_as_user(home, *flex, "daemon", "stop"), capture_output=True)
        built = subprocess.run([*as_user, "podman", "images", "-q", "--filter", "reference=vsc-bench-df-*"],
                               capture_output=True, text=True).stdout.split()
        subprocess.run([*as_user, "podman", "rmi", "-f", *built, IMAGE], capture_output=True)
        subprocess.run(_as_user(home, py, "-m", "flex", "runtime", "ps", "-a", "-q"), capture_output=True)
        subprocess.run([*as_user, "podman", "system", "reset", "-f"], capture_output=True)  # its storage here
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
