"""Restore-anywhere benchmark (issue 17): an environment from a backup of >= 1 GiB, made on one runner, Ready on
another runner.

A real `flex server` (root, SQLite, `--backup-repository DIR`: a shared repository directory) and two real root
runners r1 and r2 (`flex runner run`, default options, each with its own FLEX_HOME and the Debian minbase image
the tests cache, imported as `flex image bootstrap` makes it) are started. An environment (an image-only
devcontainer from a git repository served by `git daemon` on 127.0.0.1) is made Ready on r1, a tree of >= 1 GiB
(--small text files of 0.1-32 KiB, plus random binaries up to --size) is piped into its workspace with `flex
runtime exec -i CONTAINER tar -x` as a user would copy a project in, and it is backed up through the API (`POST
.../backups`, waited until completed and retention is done). Then, per run:

  restore -> Ready   POST .../backups/{id}/restore {"as": NAME, "runner": "r2"} until NAME is phase running with
                     Ready=True at its generation on r2, polled every 10 ms (--poll) over the API   target: <= 10 s
    queued           the call until r2 says Restoring (placement, the watch, the workspace's disk image made)
    restore          Restoring -> Restored (r2's backup worker reads the shared repository, renames into place)
    container        Restored -> ContainerReady (container made, writable layer swapped in, owners shifted,
                     started), then -> Ready (no lifecycle hooks here)
  restic restore     for context: `restic restore latest` of the same tree from a restic repository on the same
                     disk (repository version 2, compression auto), the restore timed alone and with a `sync -f`
                     after it (flex's restore ends in a syncfs: it is made durable); into a directory on that disk,
                     and, like for like, into a fresh 10 GiB ext4 disk image made and mounted as r2 makes a
                     workspace volume's (a root runner restores into that filesystem)

The breakdown is from the conditions' transition times (the Restoring one as first seen by the poll). Each run's
restored environment is force-deleted, and torn down by r2, before the next; flex and restic alternate which goes
first. Both read a repository just written (warm in the page cache). Everything (processes, containers,
mounts, loop devices, temp dirs) is cleaned up at the end, on failure and on Ctrl-C too. Run as root:

    .venv/bin/python bench/restore.py [--runs N] [--dir /var/tmp] [--small 30000] [--size 1.05] [--poll 0.01]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.access import wait_port  # noqa: E402
from flex.api import Environment  # noqa: E402
from flex.client import FlexClient  # noqa: E402

IMAGE = "flexbench/minbase:1"
PASSWORD = "bench-password"
WORDS = ["def", "class", "return", "import", "self", "value", "for", "in", "if", "else", "while", "yield",
         "async", "await", "with", "as", "try", "except", "lambda", "None", "True", "False", "pass", "break",
         "continue", "from", "global", "nonlocal", "assert", "del", "raise", "or", "and", "not", "is"]
_GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid", "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@example.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


class _Stop(Exception):
    """SIGTERM: clean up as for Ctrl-C."""


def make_tree(root: Path, small: int, total: int) -> tuple[int, int]:
    """``small`` text files (source-like, 0.1-32 KiB) in packages of 500 and modules of 50, then random
    binaries (up to 128 MiB each) until the tree holds ``total`` bytes. Returns (bytes, files)."""
    rng = random.Random(17)
    pool = " ".join(rng.choices(WORDS, k=1 << 20)).encode()  # ~5 MB of words to slice the files from
    size = 0
    for i in range(small):
        d = root / "src" / f"pkg{i // 500}" / f"mod{i // 50}"
        if i % 50 == 0:
            d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(100, 32 << 10)
        at = rng.randrange(len(pool) - n)
        (d / f"file{i}.py").write_bytes(pool[at:at + n] + b"\n")
        size += n + 1
    (root / "bin").mkdir()
    files, i = small, 0
    while size < total:
        n = min(128 << 20, total - size)
        with open(root / "bin" / f"blob{i}.bin", "wb") as f:
            left = n
            while left:
                chunk = min(left, 1 << 20)
                f.write(os.urandom(chunk))
                left -= chunk
        size, files, i = size + n, files + 1, i + 1
    return size, files


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


def _ts(d: datetime | None) -> float | None:
    return d.timestamp() if d is not None else None


class Bench:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.homes = {"r1": base / "home-r1", "r2": base / "home-r2"}
        self.logs = {n: base / f"{n}.log" for n in ("server", "r1", "r2", "git-daemon")}
        self.admin: FlexClient | None = None
        self.url = ""

    # processes ---------------------------------------------------------------------------------------------
    def env_of(self, runner: str) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "FLEX_HOME": str(self.homes[runner]), "PYTHONPATH": path}
        env.pop("FLEX_DEBUG", None)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # a session of its own: a Ctrl-C reaches this script only, which then deletes, stops and removes in order
        with open(self.logs[name], "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd="/", start_new_session=True)
        self.procs[name] = proc
        return proc

    def flex(self, runner: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _check([sys.executable, "-m", "flex", *args], env=self.env_of(runner), cwd="/", timeout=timeout)

    def git_repo(self, files: dict[str, str]) -> str:
        base, work = self.base / "git", self.base / "git-work"
        base.mkdir()
        work.mkdir()
        for rel, text in files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        env = {**os.environ, **_GIT_ENV}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
            _check(["git", *args], cwd=work, env=env)
        _check(["git", "clone", "-q", "--bare", str(work), str(base / "app.git")], env=env)
        port = _free_port()
        self.spawn("git-daemon", ["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                                  f"--port={port}", "--reuseaddr", str(base)])
        wait_port(port, 20)
        return f"git://127.0.0.1:{port}/app.git"

    def start_server(self, shared: Path) -> FlexClient:
        import httpx

        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        home = self.base / "server-home"
        proc = self.spawn("server", [sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{port}",
                                     "--backup-repository", str(shared)],
                          env={**os.environ, "FLEX_HOME": str(home)})
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"flex server did not start:\n{self.logs['server'].read_text()[-3000:]}")
            time.sleep(0.1)
        self.admin = FlexClient(self.url, (home / "server" / "admin-token").read_text().strip())
        return self.admin

    def join_and_run(self, runner: str, side: str) -> None:
        assert self.admin is not None
        token = self.admin.create_join_token({"labels": {"side": side}}).token
        self.flex(runner, "runner", "join", self.url, "--token", token, "--name", runner, "--label", f"side={side}",
                  "--kind", "vm", timeout=120)
        self.spawn(runner, [sys.executable, "-m", "flex", "runner", "run"], env=self.env_of(runner))

    def containers(self, runner: str, env_id: str) -> list[dict[str, Any]]:
        out = self.flex(runner, "runtime", "ps", "-a", "--json", "--filter", f"label=flex.dev/environment={env_id}")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def disk_image(self, path: Path, point: Path) -> Path:
        """A sparse ext4 image of 10 GiB (an environment's default disk) mounted on ``point``, made and mounted
        as a root runner makes a workspace volume's (flex/runner/disk_image.py)."""
        _check(["truncate", "-s", str(10 << 30), str(path)])
        _check(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(path)])
        point.mkdir()
        _check(["mount", "-o", "loop,nodev,nosuid,discard", str(path), str(point)])
        dev = _check(["findmnt", "-n", "-o", "SOURCE", str(point)]).stdout.strip()
        _check(["losetup", "--direct-io=on", dev])  # as the runner's: no second page cache of the image
        return path

    def log_tail(self, runner: str) -> str:
        return self.logs[runner].read_text()[-4000:] if self.logs[runner].exists() else ""

    # cleanup -----------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        from tests.runtime.containers.conftest import Mode, cleanup

        if self.admin is not None and self.procs.get("server") and self.procs["server"].poll() is None:
            with contextlib.suppress(Exception):
                for e in self.admin.list_environments().items:
                    self.admin.delete_environment(e.metadata.name, force=True)  # the runners tear them down
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and any(
                        any((h / "runner" / "volumes").glob("*")) for h in self.homes.values()):
                    time.sleep(0.2)
            self.admin.close()
        for name in ("r1", "r2", "server", "git-daemon"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT if name == "server" else signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for name, home in self.homes.items():
            if not home.exists():
                continue
            try:
                cleanup(Mode(name="root", home=home, python=[sys.executable]))  # containers, overlay mounts
            except AssertionError as err:
                print(f"cleanup of {name}: {err}", file=sys.stderr)
            for img in (home / "runner" / "disks").glob("*.img"):
                self._unmount_under(home / "runner" / "volumes")
                out = subprocess.run(["losetup", "-j", str(img), "-n", "-O", "NAME"], capture_output=True, text=True)
                for dev in out.stdout.split():
                    subprocess.run(["losetup", "-d", dev], capture_output=True)
        self._unmount_under(self.base)
        for img in self.base.glob("restic-*.img"):
            out = subprocess.run(["losetup", "-j", str(img), "-n", "-O", "NAME"], capture_output=True, text=True)
            for dev in out.stdout.split():
                subprocess.run(["losetup", "-d", dev], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(self.base)], check=False)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        prefix = str(root) + "/"
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split()[4]
            if point.startswith(prefix):
                subprocess.run(["umount", "--lazy", point], capture_output=True)


def _is_ready(env: Environment, runner_id: str) -> bool:
    c = env.status.condition("Ready")
    return env.status.phase == "running" and c is not None and c.status == "True" and \
        env.status.observed_generation == env.metadata.generation and env.status.runner_id == runner_id


def _wait_env(admin: FlexClient, name: str, pred: Callable[[Environment], bool], log: Callable[[], str],
              timeout: float = 600) -> Environment:
    deadline = time.monotonic() + timeout
    while True:
        env = admin.get_environment(name)
        if pred(env):
            return env
        if env.status.phase == "failed" or time.monotonic() > deadline:
            raise SystemExit(f"{name}: {env.status.phase}: {env.status.message}\nrunner log:\n{log()}\n"
                             f"status: {env.status.to_wire()}")
        time.sleep(0.05)


def _restore_to_ready(admin: FlexClient, backup: str, name: str, runner_id: str, log: Callable[[], str],
                      poll: float) -> dict[str, float | None]:
    """One restore onto r2, timed from the call to Ready (polled every ``poll`` s); the phases from the conditions."""
    restoring: float | None = None
    t_wall, t = time.time(), time.perf_counter()
    admin.restore_backup("orig", backup, name, runner="r2")
    while True:
        env = admin.get_environment(name)
        seen = time.perf_counter()
        if _is_ready(env, runner_id):
            break
        c = env.status.condition("Restored")
        if restoring is None and c is not None and c.status == "Unknown":
            restoring = _ts(c.last_transition_time)
        if env.status.phase == "failed":
            raise SystemExit(f"{name} failed: {env.status.message}\nr2 log:\n{log()}")
        if seen - t > 300:
            raise SystemExit(f"{name} not Ready after 300 s: {env.status.to_wire()}\nr2 log:\n{log()}")
        time.sleep(poll)
    total = seen - t

    def at(type_: str) -> float | None:
        c = env.status.condition(type_)
        return _ts(c.last_transition_time) if c is not None and c.status == "True" else None

    restored, container, ready = at("Restored"), at("ContainerReady"), at("Ready")

    def span(a: float | None, b: float | None) -> float | None:
        return b - a if a is not None and b is not None else None

    return {"total": total, "queued": span(t_wall, restoring), "restore": span(restoring, restored),
            "container": span(restored, container), "ready": span(container, ready),
            "poll": span(ready, t_wall + total)}


def _drop(admin: FlexClient, name: str, home: Path, env_id: str) -> None:
    """Force-delete ``name`` and wait until its runner has torn it down (its volume gone)."""
    admin.delete_environment(name, force=True)
    deadline = time.monotonic() + 120
    while (home / "runner" / "volumes" / env_id).exists() or \
            (home / "runner" / "disks" / f"{env_id}.img").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} ({env_id}) was not torn down by its runner")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", default="/var/tmp", help="where the temp dir goes (homes, repositories, the tree)")
    ap.add_argument("--small", type=int, default=30000, help="small text files in the tree")
    ap.add_argument("--size", type=float, default=1.05, help="the tree's size in GiB (>= 1 for the target)")
    ap.add_argument("--poll", type=float, default=0.01, help="seconds between status reads while timing")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (two root runners, their containers and disk images)")
    for tool in ("restic", "git", "crun"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (installer/install.sh --dev)")

    def on_term(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)
    base = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=args.dir))
    base.chmod(0o755)
    bench = Bench(base)
    try:
        return _main(args, bench)
    except (KeyboardInterrupt, _Stop) as err:
        print(f"interrupted ({type(err).__name__} {err}): cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up runs to its end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


def _main(args: argparse.Namespace, bench: Bench) -> int:
    from tests.conftest import debian_rootfs_tar
    from tests.runtime.containers.conftest import Mode, image_from_tar

    base = bench.base
    t = time.perf_counter()
    tree = base / "tree"
    size, nfiles = make_tree(tree, args.small, int(args.size * 2**30))
    print(f"tree: {size / 2**30:.2f} GiB in {nfiles} files ({args.small} text files, {nfiles - args.small} random "
          f"binaries), made in {time.perf_counter() - t:.1f} s", flush=True)

    tar = debian_rootfs_tar()
    image = ""
    for home in bench.homes.values():
        home.mkdir(mode=0o700)
        image = image_from_tar(Mode(name="root", home=home, python=[sys.executable]), tar, IMAGE)
    devcontainer = {".devcontainer/devcontainer.json": json.dumps({"image": image}, indent=2),
                    "README.md": "hello from the repository\n"}
    git = bench.git_repo(devcontainer)
    shared = base / "shared-backups"
    shared.mkdir(mode=0o700)
    admin = bench.start_server(shared)
    bench.join_and_run("r1", "a")
    bench.join_and_run("r2", "b")
    deadline = time.monotonic() + 60
    while {r.name: r.backup_repository for r in admin.list_runners().items} != {"r1": "shared", "r2": "shared"}:
        if time.monotonic() > deadline:
            raise SystemExit(f"runners not both on the shared repository: {admin.list_runners()}")
        time.sleep(0.3)
    ids = {r.name: r.id for r in admin.list_runners().items}
    print(f"server and runners r1, r2 up ({time.perf_counter() - t:.1f} s since the start)", flush=True)

    t = time.perf_counter()
    admin.create_environment("orig", {"source": {"git": git}, "runnerSelector": {"side": "a"}})
    orig = _wait_env(admin, "orig", lambda e: _is_ready(e, ids["r1"]), lambda: bench.log_tail("r1"))
    print(f"orig Ready on r1 in {time.perf_counter() - t:.2f} s", flush=True)
    [c] = bench.containers("r1", orig.metadata.id)

    # the tree into the workspace, as a user copies a project in: tar piped through exec
    t = time.perf_counter()
    packer = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
    unpack = subprocess.run([sys.executable, "-m", "flex", "runtime", "exec", "-i", c["id"], "tar", "-C",
                             "/workspaces/orig", "-xf", "-"], stdin=packer.stdout, env=bench.env_of("r1"),
                            capture_output=True, text=True, cwd="/", timeout=1200)
    assert packer.stdout is not None
    packer.stdout.close()
    if packer.wait() != 0 or unpack.returncode != 0:
        raise SystemExit(f"copying the tree in failed: {unpack.stderr[-3000:]}")
    count = bench.flex("r1", "runtime", "exec", c["id"], "sh", "-c", "find /workspaces/orig -type f | wc -l").stdout
    print(f"tree copied into orig's workspace in {time.perf_counter() - t:.1f} s ({count.strip()} files there)",
          flush=True)

    t = time.perf_counter()
    made = admin.create_backup("orig")
    deadline = time.monotonic() + 1200
    while (made := admin.get_backup("orig", made.id)).state not in ("completed", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit(f"backup {made.id} not done after 1200 s:\n{bench.log_tail('r1')}")
        time.sleep(0.1)
    if made.state != "completed" or made.repository != "shared":
        raise SystemExit(f"backup {made.id}: {made.state} in {made.repository}: {made.error}")
    backup_took = time.perf_counter() - t

    def retained(e: Environment) -> bool:  # retention (a prune of the shared repository) is over
        b = e.status.condition("BackedUp")
        return b is not None and b.status == "True" and "; kept " in b.message

    _wait_env(admin, "orig", retained, lambda: bench.log_tail("r1"))
    print(f"backup {made.id}: {made.size / 2**30:.2f} GiB, {made.files} files, made in {backup_took:.1f} s "
          f"(API call to completed); shared repository {_du(shared) / 2**30:.2f} GiB", flush=True)

    renv = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(base / "restic-cache")}
    rrepo = base / "restic-repo"
    _check(["restic", "-r", str(rrepo), "init", "--repository-version", "2"], env=renv)
    t = time.perf_counter()
    _check(["restic", "-r", str(rrepo), "backup", "-q", "."], env=renv, cwd=tree)  # paths relative to the tree
    print(f"restic backup of the tree: {time.perf_counter() - t:.1f} s; repository {_du(rrepo) / 2**30:.2f} GiB",
          flush=True)

    runs: list[dict[str, float | None]] = []
    restic: dict[str, list[float]] = {"dir": [], "dir+sync": [], "image": [], "image+sync": []}
    loads: list[str] = []

    def flex_run(i: int) -> None:
        name = f"restored{i}"
        subprocess.run(["sync"], check=True)
        loads.append(Path("/proc/loadavg").read_text().strip())
        runs.append(_restore_to_ready(admin, made.id, name, ids["r2"], lambda: bench.log_tail("r2"), args.poll))
        env = admin.get_environment(name)
        [ct] = bench.containers("r2", env.metadata.id)
        got = bench.flex("r2", "runtime", "exec", ct["id"], "sh", "-c",
                         f"find /workspaces/{name} -type f | wc -l; du -sb /workspaces/{name} | cut -f1").stdout.split()
        if int(got[0]) < nfiles or int(got[1]) < size:
            raise SystemExit(f"{name}: only {got[0]} files, {got[1]} bytes restored (want {nfiles}, {size})")
        _drop(admin, name, bench.homes["r2"], env.metadata.id)

    def restic_run(i: int) -> None:
        for where in ("dir", "image"):
            out = base / f"restic-out-{i}"
            if where == "image":  # a fresh ext4 disk image as r2 makes for a workspace volume (disk_image.py)
                image = bench.disk_image(base / f"restic-{i}.img", out)
            subprocess.run(["sync"], check=True)
            t = time.perf_counter()
            _check(["restic", "-r", str(rrepo), "restore", "latest", "--target", str(out / "restore")], env=renv)
            restic[where].append(time.perf_counter() - t)
            _check(["sync", "-f", str(out)])  # flex's restore ends in a syncfs (durable); restic's does not
            restic[where + "+sync"].append(time.perf_counter() - t)
            if where == "image":
                _check(["umount", str(out)])
                image.unlink()
            shutil.rmtree(out)

    for i in range(args.runs):
        for step in (flex_run, restic_run) if i % 2 == 0 else (restic_run, flex_run):  # neither always first
            step(i)
        r = runs[-1]
        print(f"run {i + 1}: restore -> Ready {r['total']:.2f} s (restore {_s(r['restore'])}, container "
              f"{_s(r['container'])}); restic restore {restic['dir'][-1]:.2f} s into a directory, "
              f"{restic['image'][-1]:.2f} s into a disk image ({restic['image+sync'][-1]:.2f} s with a sync); "
              f"load {loads[-1]}", flush=True)

    def med(key: str) -> float | None:
        vals = [v for r in runs if (v := r[key]) is not None]
        return statistics.median(vals) if vals else None

    total, rest = med("total"), med("restore")
    assert total is not None
    rr = {k: statistics.median(v) for k, v in restic.items()}
    like = rr["image+sync"]  # like for like: the same kind of target filesystem, made durable as flex's is
    print()
    print(f"restore anywhere: a {size / 2**30:.2f} GiB backup ({made.files} files, {nfiles} in the tree) made on "
          f"r1, restored on r2; {'median of ' + str(args.runs) + ' runs' if args.runs > 1 else 'one run'}, "
          f"status polled every {args.poll * 1000:.0f} ms")
    rows = [
        ("restore -> Ready (API call to Ready=True on r2)", total, "<= 10 s"),
        ("  queued: call -> Restoring (placement, watch, disk image)", med("queued"), ""),
        ("  restore: Restoring -> Restored (worker, renames)", rest, ""),
        ("  container: Restored -> ContainerReady (make, shift, start)", med("container"), ""),
        ("  ContainerReady -> Ready", med("ready"), ""),
        ("  Ready -> seen by the poll", med("poll"), ""),
        ("restic restore, same tree, into a directory on the same disk", rr["dir"], ""),
        ("  the same, then sync -f", rr["dir+sync"], ""),
        ("restic restore into a fresh ext4 disk image (as r2's), same disk", rr["image"], ""),
        ("  the same, then sync -f (like for like with flex's restore)", like, ""),
        ("ratio: flex restore phase / restic (disk image + sync)", None if rest is None else rest / like, "x"),
        ("ratio: flex restore -> Ready / restic (disk image + sync)", total / like, "x"),
        ("ratio: flex restore -> Ready / restic (directory)", total / rr["dir"], "x"),
    ]
    print(f"{'':<66} {'value':>9}  target")
    for label, v, target in rows:
        shown = "n/a" if v is None else (f"{v:.2f}x" if target == "x" else f"{v:.2f} s")
        print(f"{label:<66} {shown:>9}  {'' if target == 'x' else target}")
    print(f"{'backup: size / files / API call to completed':<66} {made.size / 2**30:>5.2f} GiB / {made.files} files / "
          f"{backup_took:.1f} s")
    print(f"target <= 10 s: {'met' if total <= 10 else 'NOT met'} ({total:.2f} s); /proc/loadavg at the runs: "
          f"{'; '.join(loads)} ({os.cpu_count()} cores)")
    return 0


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


if __name__ == "__main__":
    raise SystemExit(main())
