"""Access benchmark (issue 15), each measurement next to its anchor, side by side in one run:

  (1) `flex exec ENV true`, the whole CLI process through `flex server` and a root runner's tunnel
      vs. `podman exec C true` of a running container of the same image.            target <= 1.0x podman
  (2) throughput of GIB GiB read through `flex port-forward` from a server in the environment
      vs. the same server program on the host read through `ssh -L` to a local sshd.  target >= 0.5x ssh -L
      (2b) the same bytes as an HTTP answer through a preview URL, next to port-forward's figure.
  (3) SESSIONS concurrent idle exec sessions (`cat`, nothing flowing): resident memory of the runner (with
      the processes it started) and of the control plane, before and with them open.
  (4) a new `ssh ENV.flex true` (the system ssh through `flex config-ssh`'s block: ProxyCommand
      `flex ssh --stdio`, the control plane, the runner's tunnel and its SSH server)
      vs. `ssh root@127.0.0.1 true` to a local sshd (public key).                      target <= 1.5x ssh
      (and beside them the same with the full `flex ssh --stdio` command, FLEX_DEBUG=1, for comparison)

Run as root: .venv/bin/python bench/access.py [--runs N] [--gib G] [--sessions S]. Medians of interleaved
runs. The image is the Debian minbase rootfs the tests cache; the environment's source comes from a
`git daemon` on 127.0.0.1. Under load, figures are not measurements: say so next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# the same server program both sides: on a connection, write N MiB (1 MiB at a time), then close; a reader
# that goes early (a readiness probe) must not kill it with SIGPIPE
SOURCE = ('use IO::Socket::INET; $SIG{PIPE} = "IGNORE";'
          ' $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 16,'
          ' ReuseAddr => 1) or die "listen: $!"; $b = "\\0" x 1048576;'
          ' while ($c = $s->accept) { for (1 .. $ARGV[1]) { $c->syswrite($b) } close $c }')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def rss_kib(pid: int, with_children: bool) -> int:
    """Resident memory of ``pid`` (and of its descendants), KiB."""
    pids = [pid]
    if with_children:
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
        parent = dict(zip(map(int, out[0::2]), map(int, out[1::2]), strict=True))
        frontier = {pid}
        while frontier:
            frontier = {p for p, pp in parent.items() if pp in frontier}
            pids += sorted(frontier)
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# the same, as an HTTP/1.0 answer (for the preview proxy): the request is read first, then N MiB follow
HTTP_SOURCE = SOURCE.replace("{ for (1", '{ while (<$c>) { last if /^\\r?\\n$/ } '
                             '$c->syswrite("HTTP/1.0 200 OK\\r\\n\\r\\n"); for (1')


def preview_rate(url: str, token: str) -> float | None:
    """MiB/s of the body read through the preview proxy, once the app in the environment answers."""
    deadline = time.monotonic() + 30
    while True:
        t = time.perf_counter()
        n = 0
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as r:
            if r.status_code == 200:
                for chunk in r.iter_raw(1 << 20):
                    n += len(chunk)
                return n / (time.perf_counter() - t) / 2**20
        if time.monotonic() > deadline:
            print(f"    preview URL: {r.status_code} from {url}; no figure")
            return None
        time.sleep(0.2)  # the server in the environment may still be starting


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd="/")
    return time.perf_counter() - t


def read_all(port: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        while chunk := s.recv(1 << 20):
            n += len(chunk)
    return n, time.perf_counter() - t


async def idle_sessions(url: str, token: str, name: str, count: int) -> list[object]:
    from websockets.asyncio.client import connect

    from flex.client.access import ws_url

    sessions: list[object] = []
    for _ in range(count):
        ws = await connect(ws_url(url, f"/api/v1/environments/{name}/exec"),
                           additional_headers={"Authorization": f"Bearer {token}"}, proxy=None)
        await ws.send(json.dumps({"command": ["cat"], "stdin": True}))
        sessions.append(ws)
    return sessions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--sessions", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (a root runner; podman and sshd as the anchors)", file=sys.stderr)
        return 2
    from tests.conftest import debian_rootfs_tar

    tar = debian_rootfs_tar()
    work = Path(tempfile.mkdtemp(prefix="flex-bench-access-", dir="/var/tmp"))
    work.chmod(0o755)  # containers' unprivileged roots pass through it to their rootfs
    home = work / "home"
    env = {**os.environ, "FLEX_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("FLEX_DEBUG", None)
    procs: list[subprocess.Popen[bytes]] = []
    podman_tag, podman_ctr = f"localhost/flex-bench-access-{os.getpid()}:latest", f"flex-bench-access-{os.getpid()}"
    try:
        from flex.runtime.base.home import Home
        from flex.runtime.images.store import ImageStore
        from flex.runtime.transfer.bootstrap import image_from_rootfs_tar

        os.environ["FLEX_HOME"] = str(home)
        image = image_from_rootfs_tar(ImageStore(Home.open()), tar, "bench/access:1").name

        # the environment's source: a git daemon serving one repository
        git = work / "git"
        src = work / "src"
        (src / ".devcontainer").mkdir(parents=True)
        (src / ".devcontainer" / "devcontainer.json").write_text(json.dumps({"image": image}))
        genv = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x.invalid", "GIT_COMMITTER_NAME": "b",
                "GIT_COMMITTER_EMAIL": "b@x.invalid", "HOME": str(work)}
        for a in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
            subprocess.run(["git", *a], cwd=src, env=genv, check=True)
        git.mkdir()
        subprocess.run(["git", "clone", "-q", "--bare", str(src), str(git / "b.git")], env=genv, check=True)
        gport = free_port()
        procs.append(subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={git}", "--listen=127.0.0.1",
                                       f"--port={gport}", "--reuseaddr", str(git)], stderr=subprocess.DEVNULL))
        wait_port(gport)

        # flex server + a root runner
        sport = free_port()
        url = f"http://127.0.0.1:{sport}"
        server = subprocess.Popen([sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{sport}"],
                                  env={**env, "FLEX_HOME": str(work / "server-home")}, stderr=subprocess.DEVNULL)
        procs.append(server)
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly
        while True:
            if server.poll() is not None:
                raise SystemExit("flex server exited")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("flex server did not start")
            time.sleep(0.1)
        token = (work / "server-home" / "server" / "admin-token").read_text().strip()
        from flex.client import FlexClient

        admin = FlexClient(url, token)
        join = admin.create_join_token({"labels": {}}).token
        subprocess.run([sys.executable, "-m", "flex", "runner", "join", url, "--token", join, "--name", "bench"],
                       env=env, check=True, capture_output=True, cwd="/")
        with open(work / "runner.log", "wb") as runner_log:
            runner = subprocess.Popen([sys.executable, "-m", "flex", "runner", "run"], env=env, stderr=runner_log,
                                      cwd="/")
        procs.append(runner)
        admin.create_environment("bench", {"source": {"git": f"git://127.0.0.1:{gport}/b.git"},
                                           "resources": {"cpus": 1, "memory": "1Gi", "disk": "2Gi"}})
        deadline = time.monotonic() + 300
        while admin.get_environment("bench").status.phase != "running":
            if time.monotonic() > deadline:
                raise SystemExit(f"the environment did not start: {(work / 'runner.log').read_text()[-3000:]}")
            time.sleep(0.3)
        cli = {**env, "FLEX_URL": url, "FLEX_TOKEN": token}
        flex_exec = [sys.executable, "-m", "flex", "exec", "bench", "--", "true"]
        while subprocess.run(flex_exec, env=cli, capture_output=True).returncode != 0:
            time.sleep(0.3)  # the tunnel is up within a second of the runner

        # (1) exec vs podman exec
        have_podman = shutil.which("podman") is not None and subprocess.run(
            ["podman", "import", "-q", str(tar), podman_tag], capture_output=True).returncode == 0 and \
            subprocess.run(["podman", "run", "-d", "--name", podman_ctr, "--network", "none", "--ulimit",
                            "nofile=20000:20000", "--ulimit", "nproc=4096:4096", podman_tag, "sleep", "infinity"],
                           capture_output=True).returncode == 0
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(timed(flex_exec, cli))
            if have_podman:
                theirs.append(timed(["podman", "exec", podman_ctr, "true"], env))
        f_ms = statistics.median(ours) * 1000
        print(f"(1) flex exec ENV true      {f_ms:7.1f} ms (median of {args.runs}, whole process)")
        if theirs:
            p_ms = statistics.median(theirs) * 1000
            print(f"    podman exec C true      {p_ms:7.1f} ms    ratio {f_ms / p_ms:.2f}x  (target <= 1.0x)")
        else:
            print("    podman exec: podman could not run here; no anchor")

        # (2) port-forward throughput vs ssh -L
        mib = max(1, round(args.gib * 1024))
        serve = f"perl -e '{SOURCE}' 4000 {mib} >/dev/null 2>&1 &"
        subprocess.run([sys.executable, "-m", "flex", "exec", "bench", "--", "sh", "-c", serve], env=cli, check=True)
        lport = free_port()
        pf = subprocess.Popen([sys.executable, "-m", "flex", "port-forward", "bench", f"{lport}:4000"], env=cli,
                              stdout=subprocess.DEVNULL)
        procs.append(pf)
        wait_port(lport)
        deadline = time.monotonic() + 30
        while read_all(lport)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # the perl server in the environment may still be starting
        sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
        sport2 = None
        if sshd is not None:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
            keys = work / "ssh"
            keys.mkdir(mode=0o700)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "user")], check=True)
            shutil.copy(keys / "user.pub", keys / "authorized_keys")
            dport, hport, sport2 = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen(
                [sshd, "-D", "-e", "-p", str(dport), "-o", "ListenAddress=127.0.0.1", "-h", str(keys / "host"),
                 "-o", f"AuthorizedKeysFile={keys / 'authorized_keys'}", "-o", "PasswordAuthentication=no",
                 "-o", "UsePAM=no", "-o", f"PidFile={keys / 'pid'}", "-o", "StrictModes=no"],
                stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen(["perl", "-e", SOURCE, str(hport), str(mib)]))
            wait_port(dport)
            wait_port(hport)
            procs.append(subprocess.Popen(
                ["ssh", "-N", "-i", str(keys / "user"), "-o", "StrictHostKeyChecking=no", "-o",
                 f"UserKnownHostsFile={keys / 'known'}", "-p", str(dport), "-L", f"{sport2}:127.0.0.1:{hport}",
                 "root@127.0.0.1"], stderr=subprocess.DEVNULL))
            wait_port(sport2)
        # interleaved: the load on a shared machine moves both figures of a pair alike
        f_rates, s_rates = [], []
        for _ in range(args.runs):
            n, secs = read_all(lport)
            f_rates.append(n / secs / 2**20)
            if sport2 is not None:
                n2, secs2 = read_all(sport2)
                s_rates.append(n2 / secs2 / 2**20)
        f_rate = statistics.median(f_rates)
        print(f"(2) flex port-forward       {f_rate:7.1f} MiB/s (median of {args.runs} reads of {n / 2**20:.0f} MiB; "
              f"{min(f_rates):.0f}-{max(f_rates):.0f})")
        # (2b) the same bytes as an HTTP answer through the preview proxy (/p/OWNER/ENV/PORT/, Bearer token)
        http_serve = f"perl -e '{HTTP_SOURCE}' 4001 {mib} >/dev/null 2>&1 &"
        subprocess.run([sys.executable, "-m", "flex", "exec", "bench", "--", "sh", "-c", http_serve], env=cli,
                       check=True)
        p_rate = preview_rate(f"{url}/p/{admin.whoami().name}/bench/4001/", token)
        if p_rate is not None:
            print(f"    preview URL (HTTP)      {p_rate:7.1f} MiB/s    ratio {p_rate / f_rate:.2f}x of port-forward")
        if sshd is None:
            print("    ssh -L: no sshd here (openssh-server); no anchor")
        else:
            s_rate = statistics.median(s_rates)
            pairs = statistics.median(f / s for f, s in zip(f_rates, s_rates, strict=True))
            print(f"    ssh -L (local sshd)     {s_rate:7.1f} MiB/s    ratio {f_rate / s_rate:.2f}x  (target >= 0.5x; "
                  f"median of pairs {pairs:.2f}x)")

            # (4) a new ssh connection: ssh ENV.flex true vs plain ssh to the local sshd, interleaved
            shome = work / "ssh-home"
            shome.mkdir()
            senv = {**cli, "HOME": str(shome)}
            subprocess.run([sys.executable, "-m", "flex", "config-ssh"], env=senv, check=True, capture_output=True)
            ours_ssh = ["ssh", "-F", str(shome / ".ssh" / "config"), "bench.flex", "true"]
            plain = ["ssh", "-F", "/dev/null", "-i", str(keys / "user"), "-o", "StrictHostKeyChecking=no", "-o",
                     f"UserKnownHostsFile={keys / 'known'}", "-p", str(dport), "root@127.0.0.1", "true"]
            timed(ours_ssh, senv)  # the known_hosts entry and the runner's host key are made once
            # FLEX_DEBUG=1 makes the ProxyCommand's lean path (flex/cli/fast_ssh.py) step aside: the full command
            full = {**senv, "FLEX_DEBUG": "1"}
            f_ssh, p_ssh, t_ssh = [], [], []
            for _ in range(args.runs):
                f_ssh.append(timed(ours_ssh, senv))
                p_ssh.append(timed(plain, env))
                t_ssh.append(timed(ours_ssh, full))
            fs, ps, ts = (statistics.median(x) * 1000 for x in (f_ssh, p_ssh, t_ssh))
            print(f"(4) ssh ENV.flex true       {fs:7.1f} ms (median of {args.runs}, new connection each)")
            print(f"    ssh (local sshd) true   {ps:7.1f} ms    ratio {fs / ps:.2f}x  (target <= 1.5x)")
            print(f"    the same, full command  {ts:7.1f} ms    ratio {ts / ps:.2f}x  (ProxyCommand through typer)")
        pf.send_signal(signal.SIGINT)

        # (3) idle sessions: memory
        r0, s0 = rss_kib(runner.pid, True), rss_kib(server.pid, False)
        loop = asyncio.new_event_loop()
        sessions = loop.run_until_complete(idle_sessions(url, token, "bench", args.sessions))
        time.sleep(2)
        r1, s1 = rss_kib(runner.pid, True), rss_kib(server.pid, False)
        print(f"(3) {args.sessions} idle exec sessions: runner (with its processes) {r0 / 1024:.0f} -> "
              f"{r1 / 1024:.0f} MiB, control plane {s0 / 1024:.0f} -> {s1 / 1024:.0f} MiB")
        for ws in sessions:
            loop.run_until_complete(ws.close())  # type: ignore[attr-defined]
        loop.close()
        admin.delete_environment("bench")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and admin.list_environments().items:
            time.sleep(0.3)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        # the environment's container outlives its runner (as designed): remove it, with its mounts
        ids = subprocess.run([sys.executable, "-m", "flex", "runtime", "ps", "-aq"], env=env, capture_output=True,
                             text=True, cwd="/").stdout.split()
        for cid in ids:
            subprocess.run([sys.executable, "-m", "flex", "runtime", "rm", "-f", cid], env=env, capture_output=True,
                           cwd="/")
        subprocess.run(["podman", "rm", "-f", podman_ctr], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", podman_tag], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
