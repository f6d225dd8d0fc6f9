"""Control-plane benchmark (issue 7): three measurements, each printed next to its anchor or target.

  (1) single-worker GET throughput and p99 on SQLite, measured with Debian's wrk (16 connections, 10 s):
      GET /api/v1/environments/{name} (auth + DB + JSON) vs. a plain FastAPI handler answering the same
      JSON under the same uvicorn settings (the framework's ceiling)              anchor; target >= 0.4x
  (2) spec change -> watching runner latency on SQLite: PATCH a spec, time until the runner's SSE watch
      delivers that generation; next to the PATCH round trip itself                        target p99 < 100 ms
  (3) scale simulation on PostgreSQL with two `flex server` replicas: R runners (heartbeats, one watch each,
      status writes when a generation is ahead), E environments created by users, then a steady phase of
      spec changes and reads; API p99 per phase, spec->runner latency, and every runner's events checked
      against the database's event log (no event lost, none twice)                      target p99 < 250 ms

Run as root (PostgreSQL is started as the postgres user): .venv/bin/python bench/controlplane.py
Smaller: --runners 50 --envs 500 --seconds 20.  Only (1) and (2): --skip-scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GIT = "https://host/org/repo.git"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def summary(samples: list[float]) -> str:
    return (f"n={len(samples):6d}  p50 {pct(samples, 50):7.1f} ms  p99 {pct(samples, 99):7.1f} ms  "
            f"max {pct(samples, 100):7.1f} ms")


class Server:
    """One `flex server` process (one uvicorn worker)."""

    def __init__(self, home: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FLEX_HOME": str(home)}
        self.proc = subprocess.Popen([sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{self.port}",
                                      *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"flex server failed: {self.proc.communicate()[1]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("flex server did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flex-bench-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        data = self.root / "data"
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-U",
                        "postgres", "--auth=trust", "-N"], check=True, capture_output=True)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c max_connections=400 -c shared_buffers=256MB")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l",
                        str(self.root / "log"), "-o", opts, "start"], check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"),
                        "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _client(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=200))


async def _sse(response: httpx.Response) -> Any:
    """Yield (event, data) pairs from a server-sent-event stream."""
    event, data = None, []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


# -- (1) GET throughput ------------------------------------------------------------------------------------

# The anchor: the plain FastAPI handler a person would write, answering the same JSON bytes, under the same
# uvicorn settings as `flex server` (one worker, no access log): what the framework itself can do here.
PLAIN_APP = """
import sys
import uvicorn
from fastapi import FastAPI, Response

body = open(sys.argv[1], "rb").read()
app = FastAPI()

@app.get("/api/v1/environments/{name}")
async def get_environment(name: str) -> Response:
    return Response(body, media_type="application/json")

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""

# wrk picks one of the 50 environments per request, like the httpx loop it replaces did.
WRK_SCRIPT = """
request = function()
  return wrk.format("GET", "/api/v1/environments/g" .. math.random(0, 49))
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str

    def line(self) -> str:
        return f"{self.rps:7.0f} req/s  p50 {self.p50_ms:6.1f} ms  p99 {self.p99_ms:6.1f} ms{self.errors}"


def _ms(text: str) -> float:
    """wrk's durations ("812.00us", "12.34ms", "1.02s") in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"not a wrk duration: {text!r}")


def wrk(url: str, script: Path, seconds: float, connections: int, token: str | None) -> WrkResult:
    """Debian's wrk (C, not Python): the load generator never competes with the server for the GIL."""
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script)]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    import re

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = f"  ({bad.group(1)} non-2xx answers!)" if bad else ""
    return WrkResult(rps, p50, p99, errors)


def get_throughput(url: str, token: str, work: Path, seconds: float, connections: int) -> None:
    if shutil.which("wrk") is None:
        print("(1) skipped: needs Debian's wrk (apt-get install wrk; installer/install.sh --dev installs it)")
        return
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        for i in range(50):
            c.post("/api/v1/environments", json={"name": f"g{i}", "spec": {"source": {"git": GIT}}}
                   ).raise_for_status()
        body = c.get("/api/v1/environments/g0").content
    (work / "body.json").write_bytes(body)
    (work / "plain.py").write_text(PLAIN_APP)
    (work / "pick.lua").write_text(WRK_SCRIPT)
    port = free_port()
    plain = subprocess.Popen([sys.executable, str(work / "plain.py"), str(work / "body.json"), str(port)])
    try:
        plain_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(plain_url + "/api/v1/environments/g0", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the plain FastAPI anchor did not start") from None
                time.sleep(0.1)
        wrk(url, work / "pick.lua", 2, connections, token)  # warm up both (imports, caches, connections)
        wrk(plain_url, work / "pick.lua", 2, connections, None)
        flex = wrk(url, work / "pick.lua", seconds, connections, token)
        anchor = wrk(plain_url, work / "pick.lua", seconds, connections, None)
    finally:
        plain.send_signal(signal.SIGINT)
        plain.wait(20)
    print(f"(1) single worker on SQLite, wrk: {connections} connections, {seconds:.0f} s each, "
          f"{len(body)}-byte answer")
    print(f"    flex GET /api/v1/environments/NAME       {flex.line()}   target >= 1000 req/s, p99 < 50 ms")
    print(f"    plain FastAPI handler, same JSON (anchor) {anchor.line()}")
    print(f"    ratio flex / plain handler: {flex.rps / anchor.rps:.2f}   target >= 0.40")


# -- (2) spec change -> runner watch latency --------------------------------------------------------------

async def watch_latency(url: str, token: str, samples: int) -> None:
    async with _client(url, token) as admin:
        join = (await admin.post("/api/v1/runners/join-tokens")).json()["token"]
        r = await admin.post("/api/v1/runners:join", json={"token": join, "name": "bench-runner", "kind": "vm",
                                                           "capacity": {"cpus": 512, "memory": "4Ti", "disk": "64Ti"}})
        rid, cred = r.json()["id"], r.json()["credential"]
        for i in range(20):
            (await admin.post("/api/v1/environments", json={"name": f"w{i}", "spec": {"source": {"git": GIT}}})
             ).raise_for_status()
        waiting: dict[tuple[str, int], asyncio.Future[float]] = {}
        async with _client(url, cred) as runner:
            rv = (await runner.get(f"/api/v1/runners/{rid}/environments")).json()["metadata"]["resourceVersion"]

            async def watch() -> None:
                async with runner.stream("GET", f"/api/v1/runners/{rid}/environments",
                                         params={"watch": 1, "resourceVersion": rv}, timeout=None) as resp:
                    async for _, ev in _sse(resp):
                        meta = ev["object"]["metadata"]
                        fut = waiting.pop((meta["name"], meta["generation"]), None)
                        if fut is not None and not fut.done():
                            fut.set_result(time.perf_counter())

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.5)
            lat, rtt = [], []
            for i in range(samples):
                name = f"w{i % 20}"
                gen = (await admin.get(f"/api/v1/environments/{name}")).json()["metadata"]["generation"] + 1
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiting[(name, gen)] = fut
                t = time.perf_counter()
                r = await admin.patch(f"/api/v1/environments/{name}", json={"spec": {"env": {"N": str(i)}}})
                rtt.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                lat.append(await asyncio.wait_for(fut, 10) - t)
            task.cancel()
    print(f"(2) spec change -> runner watch on SQLite ({samples} sequential changes)")
    print(f"    PATCH sent -> event at runner   {summary(lat)}   target p99 < 100 ms")
    print(f"    PATCH round trip (anchor)       {summary(rtt)}")


# -- (3) scale simulation ------------------------------------------------------------------------------------

@dataclass
class Stats:
    phase: str = "setup"
    lat: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    spec_to_runner: list[float] = field(default_factory=list)
    sent: dict[tuple[str, int], float] = field(default_factory=dict)
    received: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    start_rv: dict[str, int] = field(default_factory=dict)

    async def call(self, c: httpx.AsyncClient, method: str, path: str, ok: tuple[int, ...] = (200, 201, 204),
                   **kw: Any) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r = await c.request(method, path, **kw)
        except httpx.TransportError as err:
            self.errors[f"{self.phase} {type(err).__name__}"] += 1
            return None
        self.lat[self.phase].append(time.perf_counter() - t)
        if r.status_code not in ok:
            self.errors[f"{self.phase} {r.status_code}"] += 1
        return r


async def simulate_runner(st: Stats, url: str, rid: str, cred: str, stop: asyncio.Event,
                          ready: asyncio.Event) -> None:
    async with _client(url, cred) as c:
        todo: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def heartbeats() -> None:
            await asyncio.sleep(random.uniform(0, 10))
            while not stop.is_set():
                await st.call(c, "POST", f"/api/v1/runners/{rid}/heartbeat", json={})
                await asyncio.sleep(10)

        async def reconcile() -> None:  # report status whenever a generation is ahead of what was observed
            while True:
                env = await todo.get()
                status = dict(env["status"])
                status.update(observedGeneration=env["metadata"]["generation"],
                              phase="running" if env["spec"]["desiredPhase"] == "running" else "stopped")
                r = await st.call(c, "PUT", f"/api/v1/environments/{env['metadata']['id']}/status", json=status,
                                  headers={"If-Match": str(env["metadata"]["resourceVersion"])}, ok=(200, 409))
                if r is not None and r.status_code == 409:  # a newer event is on its way; it will requeue
                    continue

        r = await st.call(c, "GET", f"/api/v1/runners/{rid}/environments", params={"limit": 1000})
        assert r is not None and r.status_code == 200
        rv = r.json()["metadata"]["resourceVersion"]
        st.start_rv[rid] = rv
        tasks = [asyncio.create_task(heartbeats()), asyncio.create_task(reconcile())]
        try:
            async with c.stream("GET", f"/api/v1/runners/{rid}/environments",
                                params={"watch": 1, "resourceVersion": rv}, timeout=None) as resp:
                ready.set()
                async for _, ev in _sse(resp):
                    obj = ev["object"]
                    meta = obj["metadata"]
                    st.received[rid].append(meta["resourceVersion"])
                    sent = st.sent.pop((meta["id"], meta["generation"]), None)
                    if sent is not None:
                        st.spec_to_runner.append(time.perf_counter() - sent)
                    if ev["type"] != "DELETED" and meta["generation"] > obj["status"]["observedGeneration"]:
                        todo.put_nowait(obj)
        except (httpx.TransportError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks:
                t.cancel()


async def scale(urls: list[str], admin_token: str, pg_url: str, runners: int, envs: int, seconds: float,
                users: int = 10) -> None:
    st = Stats()
    stop = asyncio.Event()
    t_setup = time.perf_counter()
    async with _client(urls[0], admin_token) as admin:
        user_tokens = []
        for u in range(users):
            r = await admin.post("/api/v1/users", json={"name": f"user{u}"})
            user_tokens.append(r.json()["token"])
        creds: list[tuple[str, str]] = []
        sem = asyncio.Semaphore(16)

        async def join(i: int) -> None:
            async with sem:
                tok = (await admin.post("/api/v1/runners/join-tokens")).json()["token"]
                async with httpx.AsyncClient(base_url=urls[i % 2], timeout=60) as anon:
                    r = await anon.post("/api/v1/runners:join", json={
                        "token": tok, "name": f"r{i}", "kind": "vm",
                        "capacity": {"cpus": 32, "memory": "128Gi", "disk": "2Ti"}})
                creds.append((r.json()["id"], r.json()["credential"]))

        await asyncio.gather(*(join(i) for i in range(runners)))
    print(f"    {runners} runners joined in {time.perf_counter() - t_setup:.1f} s")
    readies = []
    runner_tasks = []
    for i, (rid, cred) in enumerate(creds):
        ready = asyncio.Event()
        readies.append(ready)
        runner_tasks.append(asyncio.create_task(simulate_runner(st, urls[i % 2], rid, cred, stop, ready)))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    print(f"    {runners} runner watches open across 2 replicas")

    clients = [_client(urls[u % 2], tok) for u, tok in enumerate(user_tokens)]
    names: dict[int, list[tuple[str, str]]] = defaultdict(list)
    st.phase = "create"
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(8)

    async def create(i: int) -> None:
        u = i % users
        async with sem:
            r = await st.call(clients[u], "POST", "/api/v1/environments", json={
                "name": f"e{i}", "spec": {"source": {"git": GIT}, "resources": {"cpus": 1, "memory": "2Gi"}}})
            if r is not None and r.status_code == 201:
                names[u].append((f"e{i}", r.json()["metadata"]["id"]))

    await asyncio.gather(*(create(i) for i in range(envs)))
    create_s = time.perf_counter() - t0
    print(f"    {envs} environments created in {create_s:.1f} s ({envs / create_s:.0f}/s), bound and reconciled")
    await asyncio.sleep(3)

    st.phase = "steady"
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def user_load(u: int) -> None:  # ~2 spec changes and ~4 reads per second per user
        c = clients[u]
        while time.perf_counter() < deadline:
            name, env_id = random.choice(names[u])
            r = await st.call(c, "GET", f"/api/v1/environments/{name}")
            if r is not None and r.status_code == 200:
                gen = r.json()["metadata"]["generation"] + 1
                st.sent[(env_id, gen)] = time.perf_counter()
                await st.call(c, "PATCH", f"/api/v1/environments/{name}",
                              json={"spec": {"env": {"N": str(random.random())}}},
                              headers={"If-Match": str(r.json()["metadata"]["resourceVersion"])}, ok=(200, 409))
            await st.call(c, "GET", "/api/v1/environments", params={"limit": 50})
            await st.call(c, "GET", f"/api/v1/environments/{random.choice(names[u])[0]}")
            await asyncio.sleep(random.uniform(0.3, 0.7))

    await asyncio.gather(*(user_load(u) for u in range(users)))
    steady_s = time.perf_counter() - t0
    await asyncio.sleep(5)  # let the last status writes and events drain
    stop.set()
    for t in runner_tasks:
        t.cancel()
    await asyncio.gather(*runner_tasks, return_exceptions=True)
    for c in clients:
        await c.aclose()

    # every event the database logged for a runner after its watch began, exactly once
    import psycopg

    lost = dup = expected_total = 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT runner_id, rv FROM watch_events WHERE runner_id IS NOT NULL").fetchall()
    expected: dict[str, set[int]] = defaultdict(set)
    for rid, rv in rows:
        if rv > st.start_rv.get(rid, 1 << 62):
            expected[rid].add(int(rv))
    for rid, _ in creds:
        got = st.received[rid]
        dup += len(got) - len(set(got))
        lost += len(expected[rid] - set(got))
        expected_total += len(expected[rid])
    steady_n = len(st.lat["steady"])
    print(f"(3) scale on PostgreSQL, 2 replicas: {runners} runners, {envs} environments, {users} users")
    print(f"    create phase API latency        {summary(st.lat['create'])}")
    print(f"    steady phase API latency        {summary(st.lat['steady'])}   target p99 < 250 ms "
          f"({steady_n / steady_s:.0f} req/s for {steady_s:.0f} s)")
    print(f"    spec change -> runner event     {summary(st.spec_to_runner)}")
    print(f"    runner events checked: {expected_total}, lost {lost}, duplicated {dup}")
    print(f"    errors: {dict(st.errors) or 'none'}")
    print(f"    machine load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="steady phase of the scale run")
    ap.add_argument("--runners", type=int, default=500)
    ap.add_argument("--envs", type=int, default=5000)
    ap.add_argument("--get-seconds", type=float, default=10)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--only-get", action="store_true", help="only (1), the GET throughput")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 500 watches need more than 1024 descriptors
    print(f"machine load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="flex-bench-"))
    try:
        server = Server(work / "sqlite")
        token = (work / "sqlite" / "server" / "admin-token").read_text().strip()
        try:
            get_throughput(server.url, token, work, args.get_seconds, 16)
            if not args.only_get:
                asyncio.run(watch_latency(server.url, token, 200))
        finally:
            server.stop()
        if args.skip_scale or args.only_get:
            return
        if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
            print("(3) skipped: needs root and PostgreSQL 15")
            return
        pg = Postgres()
        try:
            one = Server(work / "one", "--db", pg.url)
            two = Server(work / "two", "--db", pg.url)
            token = (work / "one" / "server" / "admin-token").read_text().strip()
            try:
                asyncio.run(scale([one.url, two.url], token, pg.url, args.runners, args.envs, args.seconds))
            finally:
                one.stop()
                two.stop()
        finally:
            pg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
