"""Runner benchmark (issue 14), side by side in one run against `devcontainer up --docker-path podman`, both
rootless as the user flextest, on the same folder and the same image (the Debian minbase rootfs the tests
cache, in the runner's image store and in flextest's podman storage under one name):

  create -> Ready   POST environment (an image-only devcontainer.json, image present, runner warm) until
                    Ready=True; against the reference's first `up` (no container yet)    target: <= 0.7 x
  warm start        stopped -> POST start until Ready=True (nothing to rebuild); against the reference's
                    second `up` (its container exists)                                  target: <= 0.5 x, <= 1 s

A real `flex server` (root, SQLite) and a real `flex runner run` (a desktop runner of flextest, default
options) are started before the runs; times are from the API call to the status saying Ready, polled every
10 ms over the API. Run as root: .venv/bin/python bench/runner.py [--runs N]. Medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.up import IMAGE, ORACLE, USER, _as_user, _run  # noqa: E402
from flex.api import Environment  # noqa: E402
from flex.client import FlexClient  # noqa: E402


def _ready_after(call: Callable[[], object], admin: FlexClient, name: str) -> float:
    t = time.perf_counter()
    call()
    while True:
        env = admin.get_environment(name)
        c = env.status.condition("Ready")
        if env.status.phase == "running" and c is not None and c.status == "True" and \
                env.status.observed_generation == env.metadata.generation:
            return time.perf_counter() - t
        if env.status.phase == "failed":
            raise SystemExit(f"{name} failed: {env.status.message}")
        if time.perf_counter() - t > 300:
            raise SystemExit(f"{name} not Ready after 300 s: {env.status.to_wire()}")
        time.sleep(0.01)


def _wait(admin: FlexClient, name: str, pred: Callable[[Environment | None], bool]) -> None:
    from flex.errors import NotFound

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if pred(admin.get_environment(name)):
                return
        except NotFound:
            if pred(None):
                return
        time.sleep(0.02)
    raise SystemExit(f"{name}: timed out")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the benchmark runs the runner and the reference as the user flextest)")
    if not ORACLE.exists() or shutil.which("podman") is None:
        raise SystemExit("needs the reference CLI and podman: installer/install.sh --dev")
    import httpx

    from bench.rootless_podman import overlay_config_home
    from tests.conftest import debian_rootfs_tar
    from tests.controlplane.conftest import free_port

    tar = debian_rootfs_tar()
    uid = pwd.getpwnam(USER).pw_uid
    base = Path(tempfile.mkdtemp(prefix="bench-runner-", dir="/var/tmp"))
    os.chown(base, uid, uid)
    home, folder = base / "home", base / "bench-app"
    for d in (home, home / "xdg", folder, folder / ".devcontainer"):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, uid)
    cfg = folder / ".devcontainer" / "devcontainer.json"
    cfg.write_text(json.dumps({"image": IMAGE}))
    os.chown(cfg, uid, uid)
    py = sys.executable
    if subprocess.run(["runuser", "-u", USER, "--", py, "-c", "pass"], capture_output=True).returncode != 0:
        py = "/usr/bin/python3"
    podman_xdg = overlay_config_home(base, uid)  # podman's overlay driver, like flex's (not vfs)
    as_user = ["runuser", "-u", USER, "--", "env", "-i", f"HOME={pwd.getpwnam(USER).pw_dir}", f"USER={USER}",
               f"XDG_CONFIG_HOME={podman_xdg}",
               "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"]
    oracle = [*as_user, str(ORACLE), "up", "--docker-path", "podman", "--workspace-folder", str(folder)]
    code = ("import sys; from pathlib import Path; from flex.runtime.base.home import Home; "
            "from flex.runtime.images.store import ImageStore; from flex.runtime.unpack.userns import store_ownership; "
            "from flex.runtime.transfer.bootstrap import image_from_rootfs_tar; "
            "image_from_rootfs_tar(ImageStore(Home.open(), ownership=store_ownership()), Path(sys.argv[1]), "
            "sys.argv[2])")
    _run(_as_user(home, py, "-c", code, str(tar), IMAGE))
    _run([*as_user, "podman", "import", str(tar), IMAGE])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = open(base / "server.log", "w")  # noqa: SIM115 (open for the whole run)
    server = subprocess.Popen([sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{port}"],
                              env={**os.environ, "FLEX_HOME": str(base / "server-home")}, stdout=server_log,
                              stderr=server_log)
    runner: subprocess.Popen[bytes] | None = None
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"flex server exited: {(base / 'server.log').read_text()}")
            time.sleep(0.1)
        admin = FlexClient(url, (base / "server-home" / "server" / "admin-token").read_text().strip())
        token = admin.create_join_token({"owner": admin.whoami().name}).token
        _run(_as_user(home, py, "-m", "flex", "runner", "join", url, "--token", token, "--name", "bench"))
        runner_log = open(base / "runner.log", "w")  # noqa: SIM115
        runner = subprocess.Popen(_as_user(home, py, "-m", "flex", "runner", "run"), stdout=runner_log,
                                  stderr=runner_log, cwd="/")
        spec = {"source": {"path": str(folder)}}
        create: dict[str, list[float]] = {"flex": [], "ref": []}
        warm: dict[str, list[float]] = {"flex": [], "ref": []}
        # one create first, not counted: the runner's first reconcile warms its caches (imports, image store)
        _ready_after(lambda: admin.create_environment("warmup", spec), admin, "warmup")
        admin.delete_environment("warmup")
        _wait(admin, "warmup", lambda e: e is None)
        for _ in range(args.runs):
            create["flex"].append(_ready_after(lambda: admin.create_environment("bench-app", spec), admin,
                                               "bench-app"))
            admin.stop_environment("bench-app")
            _wait(admin, "bench-app", lambda e: e is not None and e.status.phase == "stopped" and
                  e.status.observed_generation == e.metadata.generation)
            warm["flex"].append(_ready_after(lambda: admin.start_environment("bench-app"), admin, "bench-app"))
            create["ref"].append(_run(oracle))
            warm["ref"].append(_run(oracle))
            admin.delete_environment("bench-app")
            _wait(admin, "bench-app", lambda e: e is None)
            ids = subprocess.run([*as_user, "podman", "ps", "-aq", "--filter",
                                  f"label=devcontainer.local_folder={folder}"], capture_output=True, text=True)
            for cid in ids.stdout.split():
                _run([*as_user, "podman", "rm", "-f", cid])
        load = os.getloadavg()[0]
        print(f"{'rootless, medians of ' + str(args.runs):<32} {'flex':>9} {'reference':>10} {'ratio':>7}  target"
              f"   (load average {load:.1f})")
        for label, runs, target in (("create -> Ready (image present)", create, "<= 0.7x"),
                                    ("warm start -> Ready", warm, "<= 0.5x, <= 1 s")):
            f, r = statistics.median(runs["flex"]), statistics.median(runs["ref"])
            print(f"{label:<32} {f:>8.2f}s {r:>9.2f}s {f / r:>6.2f}x  {target}")
        print("(reference: devcontainer up --docker-path podman, first up without a container / second up)")
    finally:
        if runner is not None and runner.poll() is None:
            for pid in subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True,
                                      text=True).stdout.split():
                os.kill(int(pid), signal.SIGTERM)  # the runner under runuser and env
            runner.wait(60)
        server.send_signal(signal.SIGINT)
        server.wait(30)
        subprocess.run([*as_user, "podman", "rmi", "-f", IMAGE], capture_output=True)
        ids = subprocess.run([*as_user, "podman", "ps", "-aq", "--filter",
                              f"label=devcontainer.local_folder={folder}"], capture_output=True, text=True)
        for cid in ids.stdout.split():
            subprocess.run([*as_user, "podman", "rm", "-f", cid], capture_output=True)
        for cid in subprocess.run(_as_user(home, py, "-m", "flex", "runtime", "ps", "-a", "-q"),
                                  capture_output=True, text=True).stdout.split():
            subprocess.run(_as_user(home, py, "-m", "flex", "runtime", "rm", "-f", cid), capture_output=True)
        subprocess.run(_as_user(home, py, "-m", "flex", "runtime", "gc"), capture_output=True)
        subprocess.run([*as_user, "podman", "system", "reset", "-f"], capture_output=True)  # its storage here
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
