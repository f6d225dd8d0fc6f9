"""Network benchmark (issue 6), figures and their anchors side by side in one run:

  (a) set-up + teardown per container, in-process as the runner calls it (prepare + attach with one
      published port + release) while another container keeps the bridge up, medians:
        root:     vs. the same links made by `ip` commands (netns add, veth, addresses, route, bridge;
                  then delete)                                              target: <= 30 ms added
        rootless: vs. bare `slirp4netns` to ready and killed               target: <= 20 ms added
      pyroute2's import (paid once per process, before the first root set-up) is printed separately.
  (b) throughput of one TCP transfer to a published port on 127.0.0.1 (root: flex's splice forwarder;
      rootless: slirp4netns) vs. the same transfer straight over the host's loopback.

Run as root: .venv/bin/python bench/network.py [--runs N] [--mbytes M]. Everything happens inside a
network namespace the script creates (never the machine's real network); rootless figures run as the
user flextest inside it (skipped if that user is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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

SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); n = 0
    while True:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
"""


def _med(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def transfer(port: int, mbytes: int) -> float:
    """Seconds to push ``mbytes`` MiB to a sink on 127.0.0.1:port and get its byte count back."""
    buf = b"\0" * (1 << 20)
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        for _ in range(mbytes):
            c.sendall(buf)
        c.shutdown(socket.SHUT_WR)
        got = c.recv(64)
    elapsed = time.perf_counter() - t
    assert int(got) == mbytes << 20, got
    return elapsed


def worker(rootless: bool, runs: int, mbytes: int) -> dict[str, float]:
    from flex.runtime.home import Home
    from flex.runtime.metadata import MetadataDB
    from flex.runtime.network import NetworkRequest, Networks, parse_publish

    out: dict[str, float] = {}
    home = Home.open(Path(tempfile.mkdtemp(prefix="flexbench-", dir=os.environ.get("BENCH_TMP"))))
    nets = Networks(home, MetadataDB(home.db_path), rootless=rootless)
    if not rootless:
        t = time.perf_counter()
        import pyroute2  # noqa: F401

        out["pyroute2 import"] = (time.perf_counter() - t) * 1000
    req = NetworkRequest("private", [parse_publish("0:8000")], "bench")
    # The first container of a runner also creates the bridge and installs the ruleset; measured once.
    if not rootless:
        t = time.perf_counter()
        nets.prepare("resident", NetworkRequest("private", [], "resident"))
        nets.attach("resident", os.getpid())
        out["first container prepare"] = (time.perf_counter() - t) * 1000
    flex_times, anchor_times = [], []
    for i in range(runs + 1):
        holder = None
        if rootless:
            holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "60"])
            time.sleep(0.05)
        t = time.perf_counter()
        nets.prepare(f"b{i}", req)
        nets.attach(f"b{i}", holder.pid if holder else os.getpid())
        nets.release(f"b{i}")
        if i:
            flex_times.append(time.perf_counter() - t)
        if holder:
            holder.kill()
            holder.wait()
        anchor_times.append(_anchor_rootless() if rootless else _anchor_root(i))
    out["flex setup+teardown"] = _med(flex_times)
    out["anchor"] = _med(anchor_times[1:])

    # Throughput: a sink in a container, reached through its published port, vs. on host loopback.
    direct = subprocess.Popen([sys.executable, "-c", SINK.replace("0.0.0.0", "127.0.0.1").replace("8000", "18000")],
                              stdout=subprocess.PIPE, text=True)
    assert direct.stdout is not None and direct.stdout.readline().strip() == "ready"
    prep = nets.prepare("tput", req)
    if rootless:
        argv = ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", SINK]
    else:
        argv = ["nsenter", f"--net={prep.netns_path}", sys.executable, "-c", SINK]
    sink = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    port = nets.attach("tput", sink.pid).ports[0].host_port
    try:
        transfer(port, 16)
        transfer(18000, 16)
        out["published MB/s"] = mbytes / min(transfer(port, mbytes) for _ in range(3))
        out["loopback MB/s"] = mbytes / min(transfer(18000, mbytes) for _ in range(3))
    finally:
        nets.release("tput")
        if not rootless:
            nets.release("resident")
        for p in (sink, direct):
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        shutil.rmtree(home.root, ignore_errors=True)
    return out


def _anchor_root(i: int) -> float:
    ns, br, v = f"anc{i}", "ancbr0", f"ancv{i}"
    cmds = [f"ip netns add {ns}", f"ip link add {br} type bridge", f"ip addr add 10.77.0.1/24 dev {br}",
            f"ip link set {br} up", f"ip link add {v} type veth peer name eth0 netns {ns}",
            f"ip link set {v} master {br} up", f"ip -n {ns} addr add 10.77.0.2/24 dev eth0",
            f"ip -n {ns} link set eth0 up", f"ip -n {ns} link set lo up",
            f"ip -n {ns} route add default via 10.77.0.1",
            f"ip link del {v}", f"ip link del {br}", f"ip netns del {ns}"]
    t = time.perf_counter()
    for c in cmds:
        subprocess.run(c.split(), check=True, capture_output=True)
    return time.perf_counter() - t


def _anchor_rootless() -> float:
    holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "60"])
    time.sleep(0.05)
    r, w = os.pipe()
    t = time.perf_counter()
    slirp = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                              f"--ready-fd={w}", str(holder.pid), "tap0"], pass_fds=[w],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    os.read(r, 1)
    slirp.kill()
    slirp.wait()
    elapsed = time.perf_counter() - t
    os.close(r)
    holder.kill()
    holder.wait()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mbytes", type=int, default=1024)
    ap.add_argument("--worker", choices=["root", "rootless"])
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "rootless", args.runs, args.mbytes)))
        return 0
    if os.geteuid() != 0:
        print("run as root: the benchmark creates a network namespace to stay off the real network",
              file=sys.stderr)
        return 1
    ns = f"flexbench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    tmp = tempfile.mkdtemp(prefix="flexbench-")
    os.chmod(tmp, 0o1777)
    results: dict[str, dict[str, float]] = {}
    try:
        for mode in ("root", "rootless"):
            cmd = ["nsenter", f"--net=/run/netns/{ns}"]
            py = sys.executable
            if mode == "rootless":
                if subprocess.run(["id", "flextest"], capture_output=True).returncode != 0:
                    continue
                py = "/usr/bin/python3"
                cmd += ["runuser", "-u", "flextest", "--", "env", f"PYTHONPATH={REPO}", f"HOME={tmp}"]
            cmd += ["env", f"BENCH_TMP={tmp}", py, str(Path(__file__).resolve()), "--worker", mode,
                    "--runs", str(args.runs), "--mbytes", str(args.mbytes)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                print(f"{mode}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            results[mode] = json.loads(r.stdout.splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"network set-up + teardown per container (median of {args.runs}), one published port")
    for mode, target, anchor in (("root", 30, "`ip` commands (13 calls)"), ("rootless", 20, "bare slirp4netns")):
        if mode not in results:
            print(f"  {mode:9s} skipped")
            continue
        r = results[mode]
        added = r["flex setup+teardown"]
        print(f"  {mode:9s} flex {added:7.1f} ms   anchor {anchor}: {r['anchor']:6.1f} ms   "
              f"ratio {added / r['anchor']:.2f}   target <= {target} ms: {'met' if added <= target else 'MISSED'}")
    if "root" in results:
        r = results["root"]
        print(f"  (root, once: import pyroute2 {r['pyroute2 import']:.0f} ms per process; the runner's first "
              f"container, which makes the bridge and ruleset, {r['first container prepare']:.0f} ms)")
    print(f"throughput of one {args.mbytes} MiB TCP transfer from 127.0.0.1 (best of 3)")
    for mode, r in results.items():
        print(f"  {mode:9s} published port {r['published MB/s']:8.0f} MB/s   host loopback "
              f"{r['loopback MB/s']:8.0f} MB/s   ratio {r['published MB/s'] / r['loopback MB/s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
