"""Container start benchmark (issue 5), both comparisons side by side in one run:

  (a) flex's own start path, in-process as the runner calls it: create (record, id range, overlay with
      idmapped layers, config.json) + start + wait for a container running `true`
      vs. raw `crun run` of a prepared bundle of the same image.            target: <= crun + 30 ms
  (b) the whole CLI process `flex runtime run --rm [--net none] IMG true`
      vs. `podman run --rm [--network none] IMG true` of the same image.    target: <= 0.8 x podman
      Like for like: root with root, rootless (as the user flextest, podman with its overlay driver)
      with rootless; no network on both sides, and each side's default network (root: flex's bridge +
      veth + nftables / podman's netavark bridge; rootless: slirp4netns on both); teardown included
      (--rm, the whole process). The same seccomp strictness on both sides, a stated setting: podman
      gets flex's own default profile (`--security-opt seccomp=FILE`, the profile flex writes into
      config.json). Root podman runs here given the VM's hard limits (`--ulimit nofile=20000:20000
      --ulimit nproc=4096:4096`: its defaults ask for more than root may have here).

Run as root: .venv/bin/python bench/containers.py [--runs N] [--dev-python]. Medians of interleaved runs.
flex runs as users run it, /usr/local/bin/flex's way (bench/installed_flex.py: a venv on /usr/bin/python3,
flex installed, not editable); --dev-python times `python -m flex` of the development venv instead.
Images: the Debian minbase rootfs that the tests cache (mmdebstrap), stored in flex's image store the
way `flex image bootstrap` stores it (root: unshifted; rootless, as flextest: shifted into its range), and
imported into podman's storage (removed again at the end).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dev-python", action="store_true",
                    help="time `python -m flex` of the development venv (editable) instead of an installed flex")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (the comparison is root crun/podman vs the root runner)", file=sys.stderr)
        return 2
    from bench.rootless_podman import overlay_config_home
    from tests.conftest import debian_rootfs_tar

    # an installed package has its bytecode cached; make sure ours is, whatever PYTHONDONTWRITEBYTECODE says
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "flex")], check=True,
                   stdout=subprocess.DEVNULL)

    tar = debian_rootfs_tar()
    work = Path(tempfile.mkdtemp(prefix="flex-bench-", dir="/var/tmp"))
    work.chmod(0o755)
    import json

    from flex.runtime.oci import seccomp
    from flex.runtime.oci.spec import DEFAULT_CAPS

    profile = work / "seccomp.json"  # flex's default profile, given to podman: same strictness both sides
    profile.write_text(json.dumps(seccomp.profile(caps=DEFAULT_CAPS, docker=False)))
    profile.chmod(0o644)
    podman_opts = ["--security-opt", f"seccomp={profile}", "--ulimit", "nofile=20000:20000", "--ulimit",
                   "nproc=4096:4096"]
    os.environ["FLEX_HOME"] = str(work / "home")
    podman_tag = "localhost/flex-bench-minbase:latest"
    have_podman = False
    user = "flextest"
    rl = work / "rootless"
    as_user: list[str] = []
    try:
        # root: an image in flex's image store, made by `flex image bootstrap`'s path from the cached tar
        from flex.runtime.base.home import Home
        from flex.runtime.images.store import ImageStore
        from flex.runtime.transfer.bootstrap import image_from_rootfs_tar

        image = image_from_rootfs_tar(ImageStore(Home.open()), tar, "bench/minbase:1").name
        have_podman = shutil.which("podman") is not None
        (rl / "home").mkdir(parents=True)
        podman_xdg = overlay_config_home(rl, pwd.getpwnam(user).pw_uid)
        shutil.chown(rl, user)
        shutil.chown(rl / "home", user)
        as_user = ["runuser", "-u", user, "--", "env", f"XDG_CONFIG_HOME={podman_xdg}",
                   f"FLEX_HOME={rl / 'home'}", f"PYTHONPATH={REPO}:{sysconfig.get_paths()['purelib']}"]
        user_python = sys.executable if subprocess.run([*as_user, sys.executable, "-c", "pass"], cwd="/",
                                                       capture_output=True).returncode == 0 else "/usr/bin/python3"
        # rootless: the same bootstrap path, as the user (layers shifted into its range at unpack)
        rl_image = subprocess.run(
            [*as_user, user_python, "-c",
             "import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
             "from flex.runtime.images.store import ImageStore; "
             "from flex.runtime.unpack.userns import store_ownership; "
             "from flex.runtime.transfer.bootstrap import image_from_rootfs_tar; "
             "print(image_from_rootfs_tar(ImageStore("
             "Home.open(), ownership=store_ownership()), Path(sys.argv[1]), 'bench/minbase:1').name)", str(tar)],
            check=True, capture_output=True, text=True, cwd="/").stdout.strip()
        if have_podman:
            subprocess.run([*as_user, "podman", "import", "-q", str(tar), podman_tag], check=True,
                           capture_output=True, cwd="/")
            root_podman = subprocess.run(["podman", "import", "-q", str(tar), podman_tag], capture_output=True)
            have_root_podman = root_podman.returncode == 0 and subprocess.run(
                ["podman", "run", "--rm", *podman_opts, "--network", "none", podman_tag, "true"],
                capture_output=True).returncode == 0
        else:
            have_root_podman = False
        from flex.runtime.containers.create import CreateOptions, create_container
        from flex.runtime.containers.store import Containers
        from flex.runtime.tasks import tasks

        store = Containers(Home.open())
        from flex.runtime.containers.image_source import StoreImages

        images = StoreImages(Home.open())
        # a prepared bundle for raw crun: flex's own (same rootfs, same config), without the init wrapper
        prepared = create_container(store, images, CreateOptions(image=image, command=["true"], init=False))
        bundle = store.bundle(prepared.id)
        crun_root = work / "crun-root"

        def flex_in_process() -> float:
            t = time.perf_counter()
            c = create_container(store, images, CreateOptions(image=image, command=["true"]))
            code = tasks.start_attached(store, c, interactive=False, tty=False)
            elapsed = time.perf_counter() - t
            assert code == 0
            store.remove(c.id)
            return elapsed

        def crun_run() -> float:
            return timed(lambda: subprocess.run(["crun", "--root", str(crun_root), "run", "--bundle", str(bundle),
                                                 "bench"], check=True))

        # what users run (bench/installed_flex.py): the same command for root and the user
        from bench.installed_flex import installed_flex

        flex_cmd = [] if args.dev_python else [str(installed_flex(REPO, work))]

        def flex_cli(net: list[str], rootless: bool) -> list[str]:
            cmd = flex_cmd or ([user_python, "-m", "flex"] if rootless else [sys.executable, "-m", "flex"])
            return [*(as_user if rootless else []), *cmd, "runtime", "run", "--rm", *net,
                    rl_image if rootless else image, "true"]

        def podman(net: list[str], rootless: bool) -> list[str]:
            return [*(as_user if rootless else []), "podman", "run", "--rm", *podman_opts, *net, podman_tag, "true"]

        # (label, flex argv, podman argv, podman works)
        cases = [(f"{who}, {'no network' if net_f else 'default network'}", flex_cli(net_f, rl), podman(net_p, rl),
                  have_podman if rl else have_root_podman)
                 for who, rl in (("rootless", True), ("root", False))
                 for net_f, net_p in ((["--net", "none"], ["--network", "none"]), ([], []))]

        def proc(argv: list[str]) -> float:
            return timed(lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, cwd="/"))

        a_flex: list[float] = []
        a_crun: list[float] = []
        b: list[tuple[list[float], list[float]]] = [([], []) for _ in cases]
        nan = float("nan")
        load = os.getloadavg()[0]
        for i in range(args.runs + 2):
            fa, ca = flex_in_process(), crun_run()
            got = [(proc(f), proc(p) if ok else nan) for _, f, p, ok in cases]
            if i >= 2:  # warm-up
                a_flex.append(fa)
                a_crun.append(ca)
                for (fl, pl), (fv, pv) in zip(b, got, strict=True):
                    fl.append(fv)
                    pl.append(pv)
        store.remove(prepared.id, force=True)
        fa_m, ca_m = median_ms(a_flex), median_ms(a_crun)
        print(f"container start benchmark, {args.runs} interleaved runs each, medians ({os.cpu_count()} cpus, "
              f"load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)")
        print("seccomp: flex's default profile on both sides (podman: --security-opt seccomp=FILE)")
        print("flex: " + (f"`python -m flex` of the development venv ({sys.executable}; rootless {user_python})"
                          if args.dev_python else "installed as users run it (bench/installed_flex.py): "
                          f"{flex_cmd[0]} on /usr/bin/python3"))
        print(f"{'':66} {'flex':>9} {'anchor':>9}  result")
        print(f"{'(a) in-process create+start+wait `true`':66} {fa_m:7.1f}ms {ca_m:7.1f}ms  "
              f"flex - crun = {fa_m - ca_m:+.1f} ms (target <= +30 ms) anchor: crun run")
        for (label, _, _, ok), (fl, pl) in zip(cases, b, strict=True):
            fm, pm = median_ms(fl), median_ms(pl)
            print(f"{'(b) `flex runtime run --rm IMG true`, ' + label:66} {fm:7.1f}ms {pm:7.1f}ms  "
                  + (f"flex / podman = {fm / pm:.2f} (target <= 0.80) anchor: podman run --rm, same network"
                     if ok else "podman does not run here"))
        return 0
    finally:
        from flex.runtime.base.home import Home
        from flex.runtime.containers.store import Containers

        leftover = Containers(Home.open())
        for c in leftover.all():
            leftover.remove(c.id, force=True)
        if have_podman:
            subprocess.run(["podman", "rmi", "-f", podman_tag], capture_output=True)
            subprocess.run([*as_user, "podman", "rmi", "-f", podman_tag], capture_output=True, cwd="/")
            subprocess.run([*as_user, "podman", "system", "reset", "-f"], capture_output=True, cwd="/")
        subprocess.run([sys.executable, "-m", "flex", "runtime", "gc"], capture_output=True)
        pid_file = rl / "home" / "run" / "userns.pid"
        if pid_file.exists():
            subprocess.run(["kill", "-9", pid_file.read_text().strip()], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(rl / "podman-graph")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
