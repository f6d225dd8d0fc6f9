"""Install benchmark (issue 19): from nothing to the first environment `Running` through the API, on a fresh Debian 12
root filesystem (mmdebstrap, variant minbase), entered as root the way a chroot is (its own mount namespace with
that root, through pivot_root: a chrooted process may not make the user namespaces environments run in), the way
an operator runs the installer:

  packages          the installer's apt-get install (runtime packages only, as on a server)
  python env        the virtualenv on the system Python and pip install of flex (from a copy of the checkout)
  service start     --server: server.toml, the service (flex's supervisor: systemd is not PID 1 here), /readyz
  base image        `flex image bootstrap` of flex.local/debian:bookworm, which the runner's install makes (--runner
                    URL --token T, the exact command the server install printed; a server alone needs none)
  join              that runner's service, until the runner is ready
  first environment POST /api/v1/environments (a git repository whose devcontainer.json names the base image)
                    until phase running and Ready=True

The new root shares the host's network (the apt and pip mirrors are reached the host's way: its apt and pip
settings and CA bundle are copied in) and runs in a mount namespace of its own, so nothing it mounts shows on the
host. Making the root filesystem is the machine, not the install: it is timed on its own line. Anchors, quoted
from their documentation (not measured here): k3s.io "curl -sfL https://get.k3s.io | sh -  # Check for Ready
node, takes ~30 seconds" (a server on a ready machine; no first workload); Coder's quickstart "get your first
Coder development environment running in under 10 minutes" (coder.com/docs get-started). Target: < 3 minutes.

Run as root: .venv/bin/python bench/install.py [--keep]. Everything it mounted or started is removed at the end,
also on Ctrl-C (the installer's --uninstall --purge in the chroot, then any process left in its namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flex.client import FlexClient  # noqa: E402
from flex.errors import FlexError  # noqa: E402

PORT = 18481
IMAGE = "flex.local/debian:bookworm"  # the installer's own base image (flex image bootstrap)
TARGET = 180.0
ANCHORS = [("k3s server, install script to Ready node (k3s.io)", "~30 s"),
           ("Coder, install to first workspace (coder.com/docs quickstart)", "< 10 min")]
HOST_FILES = ["/etc/resolv.conf", "/etc/apt/apt.conf.d/99artifact-registry", "/etc/apt/apt.conf.d/99farm-no-dep11",
              "/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/etc/xdg/pip/constraints.txt"]


class Bench:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "rootfs"
        self.holder: subprocess.Popen[bytes] | None = None
        self.git: subprocess.Popen[bytes] | None = None
        self.marks: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    # ---- the machine ----
    def make_rootfs(self) -> float:
        t = time.perf_counter()
        r = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=directory",
                            "bookworm", str(self.root)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"mmdebstrap failed: {r.stderr.strip().splitlines()[-1:]}")
        took = time.perf_counter() - t
        for f in HOST_FILES:  # how this machine reaches the package mirrors (a proxy or private CA elsewhere)
            if Path(f).exists():
                dst = self.root / f.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst, follow_symlinks=True)
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if ca.exists():
            (self.root / "etc/flex-bench").mkdir(parents=True)
            shutil.copy2(ca, self.root / "etc/flex-bench/ca.crt")
        # the checkout, as a copy (pip builds in the source tree)
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, check=True).stdout.split(b"\0")
        for rel in (f.decode() for f in files if f):
            src = REPO / rel
            if src.is_file():
                dst = self.root / "src" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        return took

    def enter(self) -> None:
        """A process holding a private mount namespace whose root is the new root filesystem; every later step
        joins it (setns puts a process at the namespace's root). pivot_root, not chroot(2): the kernel refuses
        a chrooted process a user namespace (EPERM), and every environment of a root runner needs one."""
        r = str(self.root)
        mounts = (f"mount --bind {r} {r} && "
                  f"mount --rbind /proc {r}/proc && mount --make-rslave {r}/proc && "
                  f"mount --rbind /sys {r}/sys && mount --make-rslave {r}/sys && "
                  f"mount --rbind /dev {r}/dev && mount --make-rslave {r}/dev && "
                  f"mount -t tmpfs -o mode=0755 tmpfs {r}/run && "
                  + (f"mkdir -p {r}/opt/wheels && mount --bind -o ro /opt/wheels {r}/opt/wheels && "
                     if Path("/opt/wheels").is_dir() else "")
                  + f"cd {r} && mkdir -p .oldroot && pivot_root . .oldroot && umount -l /.oldroot && rmdir /.oldroot"
                  " && echo ready && exec sleep infinity")
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts],
                                       stdout=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ready":
            raise SystemExit("could not mount /proc, /sys, /dev and /run in the chroot")

    def chroot(self, script: str, *, stamp: bool = True, check: bool = True) -> str:
        """Run ``script`` in the chroot (bash, as root); with ``stamp`` each output line is timestamped on arrival."""
        assert self.holder is not None
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "TERM": "dumb", "PIP_CERT": "/etc/flex-bench/ca.crt",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180"}
        if Path("/opt/wheels").is_dir():
            env["PIP_FIND_LINKS"] = "/opt/wheels"
        proc = subprocess.Popen(["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "/bin/bash", "-c",
                                 f"cd / && {script}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
        assert proc.stdout is not None
        out = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            out.append(line)
            if stamp:
                self.marks.append((time.perf_counter(), line))
        code = proc.wait()
        text = "\n".join(out)
        if check and code != 0:
            raise SystemExit(f"in the chroot ({code}):\n" + "\n".join(out[-15:]))
        return text

    # ---- the first environment's source ----
    def git_repo(self) -> str:
        work, bare = self.base / "app", self.base / "git" / "app.git"
        (work / ".devcontainer").mkdir(parents=True)
        (work / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"image": IMAGE}) + "\n")
        env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
               "GIT_COMMITTER_EMAIL": "b@x"}
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "app"]):
            subprocess.run(["git", *args], cwd=work, env=env, check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        port = PORT + 1
        self.git = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={bare.parent}",
                                     "--listen=127.0.0.1", f"--port={port}", "--reuseaddr", str(bare.parent)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return f"git://127.0.0.1:{port}/app.git"

    # ---- cleanup: what it started, then what it mounted, then the files ----
    def cleanup(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            if (self.root / "opt/flex/venv/bin/flex").exists():
                try:
                    self.chroot("cd /src && installer/install.sh --uninstall --purge >/dev/null 2>&1", stamp=False,
                                check=False)
                except Exception as err:  # cleanup goes on, whatever failed
                    print(f"cleanup: uninstall in the chroot failed: {err}", file=sys.stderr)
            ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
            for _ in range(3):  # anything left in the namespace (or chrooted into the root filesystem)
                left = [p for p in _pids() if p != self.holder.pid and _in(p, ns, self.root)]
                for p in left:
                    _kill(p)
                if not left:
                    break
                time.sleep(0.5)
            self.holder.kill()
            self.holder.wait()
        if self.git is not None:  # git daemon and the git-daemon it runs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.git.pid, signal.SIGKILL)
            self.git.wait()
        # the namespace is gone with its last process, and its mounts with it; check before deleting anything
        mounted = [ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()
                   if ln.split()[1].startswith(str(self.root))]
        if mounted:
            print(f"cleanup: still mounted, left in place: {mounted[:3]}", file=sys.stderr)
            return
        shutil.rmtree(self.base, ignore_errors=True)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _in(pid: int, ns: str, root: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == ns or os.readlink(f"/proc/{pid}/root").startswith(str(root))
    except OSError:
        return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait(what: str, pred: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():  # type: ignore[operator]
                return time.perf_counter()
        except (OSError, FlexError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"never: {what}")


def _mark(marks: list[tuple[float, str]], needle: str, after: float = 0.0) -> float:
    for t, line in marks:
        if t >= after and needle in line:
            return t
    raise SystemExit(f"the installer never printed {needle!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="leave the chroot in place (for a look; no cleanup)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (mmdebstrap, chroot, mounts)")
    for tool in ("mmdebstrap", "unshare", "nsenter", "git"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}: installer/install.sh --dev")
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-install-", dir="/var/tmp")))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    load = os.getloadavg()
    try:
        rootfs = bench.make_rootfs()
        print(f"fresh Debian 12 minbase root filesystem (mmdebstrap; the machine, not timed below): {rootfs:.1f} s")
        source = bench.git_repo()
        bench.enter()
        start = time.perf_counter()
        bench.chroot(f"cd /src && installer/install.sh --server --listen 127.0.0.1:{PORT}")
        server_out = [ln for _, ln in bench.marks]
        t_apt = _mark(bench.marks, "changed: apt packages installed")
        t_venv = _mark(bench.marks, "installed in /opt/flex/venv")
        t_server = _mark(bench.marks, "control plane ready at")  # a server alone makes no base image
        join = next(ln.strip() for ln in server_out if "--runner" in ln and "--token flexj_" in ln)
        cmd = join.split("install.sh", 1)[1]
        bench.chroot(f"cd /src && installer/install.sh {cmd} --name bench-runner")
        t_image = _mark(bench.marks, "made (flex image bootstrap)", after=t_server)  # the runner's install makes it
        token = (bench.root / "var/lib/flex/server/admin-token").read_text().strip()
        admin = FlexClient(f"http://127.0.0.1:{PORT}", token)
        t_join = _wait("the runner ready", lambda: any(r.name == "bench-runner" and r.state == "ready"
                                                       for r in admin.list_runners().items), 120)
        admin.create_environment("first", {"source": {"git": source}})

        def running() -> bool:
            env = admin.get_environment("first")
            ready = [c for c in env.status.conditions if c.type == "Ready"]
            return env.status.phase == "running" and bool(ready) and ready[0].status == "True"

        t_env = _wait("the first environment running", running, 300)
        admin.close()
        phases = [("packages (apt-get install)", start, t_apt),
                  ("python env (venv + pip)", t_apt, t_venv),
                  ("service start (--server, /readyz)", t_venv, t_server),
                  ("runner install: base image (flex image bootstrap)", t_server, t_image),
                  ("join (--runner service, until ready)", t_image, t_join),
                  ("first environment (API, until Running)", t_join, t_env)]
        total = t_env - start
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared)")
        print(f"{'phase':<50} {'seconds':>8}")
        for name, a, b in phases:
            print(f"{name:<50} {b - a:>8.1f}")
        print(f"{'nothing to first environment Running':<50} {total:>8.1f}   target < {TARGET:.0f} s "
              f"({'met' if total < TARGET else 'missed'})")
        for name, figure in ANCHORS:
            print(f"{'anchor: ' + name:<66} {figure:>9}  (documented, not run here)")
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept: {bench.root} (holder pid {bench.holder.pid if bench.holder else '-'})", file=sys.stderr)
        else:
            bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
