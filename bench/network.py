"""Network benchmark (issue 6), figures and their anchors side by side in one run:

  (a) per container, in-process as the runner calls it, while another container keeps the bridge up,
      medians of set-up (prepare + attach with one published TCP port: what a start waits for), teardown
      (release) and their sum, each beside its anchor measured in the same run:
        root:     the same links made by `ip` commands onto an existing bridge (netns add, veth, master,
                  address, links up, route; then link del + netns del)     target: set-up <= 30 ms added
        rootless: bare `slirp4netns` from start to its ready byte; kill + reap  target: set-up <= 20 ms added
      and the same with a UDP port published too (root and rootless: flex's forwarder process).
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


# A rootless container's namespaces as crun makes them for flex: a user namespace of its own inside the
# runner's (here a stand-in for the keeper), which owns its network namespace.
NESTED_USERNS = ["unshare", "--user", "--map-root-user", "--", "unshare", "--user", "--map-root-user"]

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
    from flex.runtime.base.home import Home
    from flex.runtime.base.metadata import MetadataDB
    from flex.runtime.network.networks import NetworkRequest, Networks, parse_publish

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
    if not rootless:
        subprocess.run(["ip", "link", "add", "ancbr0", "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "10.77.0.1/24", "dev", "ancbr0"], check=True)
        subprocess.run(["ip", "link", "set", "ancbr0", "up"], check=True)
    series: dict[str, list[float]] = {}
    udp_req = NetworkRequest("private", [parse_publish("0:8000"), parse_publish("0:9000/udp")], "bench")
    try:
        for i in range(runs + 1):
            for label, request in (("", req), ("udp ", udp_req)):
                holder = None
                if rootless:
                    holder = subprocess.Popen([*NESTED_USERNS, "--net", "sleep", "60"])
                    time.sleep(0.05)
                cid = f"b{label.strip()}{i}"
                t0 = time.perf_counter()
                nets.prepare(cid, request)
                nets.attach(cid, holder.pid if holder else os.getpid())
                t1 = time.perf_counter()
                nets.release(cid)
                t2 = time.perf_counter()
                if holder:
                    holder.kill()
                    holder.wait()
                if i:  # the first round warms caches and imports
                    series.setdefault(f"{label}setup", []).append(t1 - t0)
                    series.setdefault(f"{label}teardown", []).append(t2 - t1)
            a_setup, a_teardown = _anchor_rootless() if rootless else _anchor_root(i)
            if i:
                series.setdefault("anchor setup", []).append(a_setup)
                series.setdefault("anchor teardown", []).append(a_teardown)
    finally:
        if not rootless:
            subprocess.run(["ip", "link", "del", "ancbr0"], check=False)
    for key, values in series.items():
        out[key] = _med(values)
    out["sum"] = _med([a + b for a, b in zip(series["setup"], series["teardown"], strict=True)])
    out["anchor sum"] = _med([a + b for a, b in zip(series["anchor setup"], series["anchor teardown"],
                                                    strict=True)])

    # Throughput: a sink in a container, reached through its published port, vs. on host loopback.
    direct = subprocess.Popen([sys.executable, "-c", SINK.replace("0.0.0.0", "127.0.0.1").replace("8000", "18000")],
                              stdout=subprocess.PIPE, text=True)
    assert direct.stdout is not None and direct.stdout.readline().strip() == "ready"
    prep = nets.prepare("tput", req)
    if rootless:
        argv = [*NESTED_USERNS, "--net", sys.executable, "-c", SINK]
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


def _anchor_root(i: int) -> tuple[float, float]:
    """The same links by `ip` commands onto an existing bridge (as flex's are): set-up, teardown."""
    ns, v = f"anc{i}", f"ancv{i}"
    setup = [f"ip netns add {ns}", f"ip link add {v} type veth peer name eth0 netns {ns}",
             f"ip link set {v} master ancbr0 up", f"ip -n {ns} addr add 10.77.0.2/24 dev eth0",
             f"ip -n {ns} link set eth0 up", f"ip -n {ns} link set lo up",
             f"ip -n {ns} route add default via 10.77.0.1"]
    teardown = [f"ip link del {v}", f"ip netns del {ns}"]
    times = []
    for cmds in (setup, teardown):
        t = time.perf_counter()
        for c in cmds:
            subprocess.run(c.split(), check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times[0], times[1]


def _anchor_rootless() -> tuple[float, float]:
    """Bare slirp4netns: start until its ready byte (set-up), then kill and reap (teardown)."""
    holder = subprocess.Popen([*NESTED_USERNS, "--net", "sleep", "60"])
    time.sleep(0.05)
    r, w = os.pipe()
    t0 = time.perf_counter()
    slirp = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                              f"--ready-fd={w}", str(holder.pid), "tap0"], pass_fds=[w],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    os.read(r, 1)
    t1 = time.perf_counter()
    slirp.kill()
    slirp.wait()
    t2 = time.perf_counter()
    os.close(r)
    holder.kill()
    holder.wait()
    return t1 - t0, t2 - t1


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

    print(f"network per container, medians of {args.runs}, one published TCP port; set-up = prepare + attach "
          "(what a start waits for), teardown = release")
    anchors = {"root": "`ip` calls onto an existing bridge (7 set-up, 2 teardown)",
               "rootless": "bare slirp4netns (start to ready; kill and reap)"}
    for mode, target in (("root", 30), ("rootless", 20)):
        if mode not in results:
            print(f"  {mode:9s} skipped")
            continue
        r = results[mode]
        print(f"  {mode} (anchor: {anchors[mode]}; target: set-up <= {target} ms added to a start)")
        for key in ("setup", "teardown", "sum"):
            print(f"    {key:9s} flex {r[key]:6.1f} ms   anchor {r['anchor ' + key]:6.1f} ms   "
                  f"ratio {r[key] / r['anchor ' + key]:.2f}")
        print(f"    with a UDP port too: set-up {r['udp setup']:.1f} ms, teardown {r['udp teardown']:.1f} ms")
        print(f"    set-up target <= {target} ms: {'met' if r['setup'] <= target else 'MISSED'}")
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
