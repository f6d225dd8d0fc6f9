"""Web UI benchmark (issue 18): the environments page with 500 environments, on a real `flex server` (SQLite).

  (1) server time for GET / (the whole page, as a signed-in browser asks for it), next to its anchor: the API's
      GET /api/v1/environments?limit=500 of the same environments (the JSON the page is rendered from)
  (2) the browser's time to a complete page (Debian's chromium): navigation start to the load event, and to the
      live list being subscribed to the watch stream
  (3) how fast a status change appears in an open page: a runner PUTs a new phase; the time until the row in the
      page shows it (a MutationObserver in the page notes the moment)                   target: within 1 s

Run: .venv/bin/python bench/ui.py [--envs 500] [--changes 30]
"""

from __future__ import annotations

import argparse
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
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


# Notes in window.__seen the moment the row's phase reads ``want`` (Date.now(): the same clock as time.time()).
_OBSERVE = """([id, want]) => {
  window.__seen = null;
  const check = () => {
    const el = document.querySelector('#' + id + ' .phase');
    if (el && el.textContent.trim() === want && window.__seen === null) window.__seen = Date.now();
  };
  new MutationObserver(check).observe(document.getElementById('envs'),
                                      {subtree: true, childList: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  (n={len(ordered)})"


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{port}",
                             "--heartbeat-timeout", "3600"],
                            env={**os.environ, "FLEX_HOME": str(home), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=open(home.parent / "server.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("flex server did not start")


def populate(api: httpx.Client, n: int) -> tuple[str, str, list[dict[str, Any]]]:
    token = api.post("/api/v1/runners/join-tokens", json={}).json()["token"]
    joined = api.post("/api/v1/runners:join", json={"token": token, "name": "bench", "kind": "vm",
                                                     "capacity": {"cpus": 100_000, "memory": "100Ti",
                                                                  "disk": "1000Ti"}}).json()
    envs = []
    for i in range(n):
        r = api.post("/api/v1/environments", json={"name": f"env-{i:04d}", "labels": {"team": f"t{i % 7}"},
                                                    "spec": {"source": {"git": "https://example.com/a.git"},
                                                             "resources": {"cpus": 0.1, "memory": "64Mi",
                                                                           "disk": "64Mi"}}})
        r.raise_for_status()
        envs.append(r.json())
    return joined["id"], joined["credential"], envs


def report(runner: httpx.Client, runner_id: str, env: dict[str, Any], phase: str) -> float:
    status = {"phase": phase, "runnerId": runner_id, "observedGeneration": env["metadata"]["generation"],
              "conditions": [{"type": "Ready", "status": "True" if phase == "running" else "False",
                              "reason": phase.capitalize()}]}
    t0 = time.time()
    runner.put(f"/api/v1/environments/{env['metadata']['id']}/status", json=status).raise_for_status()
    return t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=500)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="flex-bench-ui-"))
    proc, url = start_server(root / "home")
    try:
        admin = (root / "home" / "server" / "admin-token").read_text().strip()
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        t = time.monotonic()
        runner_id, credential, envs = populate(api, args.envs)
        print(f"{args.envs} environments created in {time.monotonic() - t:.1f} s")
        runner = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {credential}"}, timeout=60)
        for env in envs[: args.changes]:
            report(runner, runner_id, env, "running")

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync", "--no-first-run"])
            # bypass_csp: only for the measuring scripts this benchmark evaluates (the page's own CSP forbids eval)
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            page.goto(url + "/signin")
            page.fill("#token", admin)
            page.click("button[type=submit]")
            page.wait_for_selector("#envs")
            cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "flex_session")

            # (1) server time: the page against the API list it is rendered from, alternating, same connection
            web = httpx.Client(base_url=url, cookies={"flex_session": cookie}, timeout=60)
            html_t, api_t = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                r = web.get("/")
                html_t.append(time.perf_counter() - t)
                assert r.status_code == 200 and r.text.count('<tr id="row-') == args.envs, r.status_code
                t = time.perf_counter()
                api.get("/api/v1/environments", params={"limit": args.envs}).raise_for_status()
                api_t.append(time.perf_counter() - t)
            print(f"(1) server  GET / (HTML, {args.envs} rows)          {ms(html_t)}")
            print(f"    anchor  GET /api/v1/environments?limit={args.envs}  {ms(api_t)}   "
                  f"ratio {statistics.median(html_t) / statistics.median(api_t):.2f}x")

            # (2) the browser: navigation to load event, and to the watch stream being open
            load_t, live_t = [], []
            for _ in range(args.rounds):
                page.goto(url + "/", wait_until="load")
                page.wait_for_selector("#live-state.live:not(.off)")
                nav = json.loads(page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))
                load_t.append(nav["loadEventEnd"] / 1000)
                live_t.append(page.evaluate("performance.now()") / 1000)
            print(f"(2) browser navigation → load event               {ms(load_t)}")
            print(f"    browser navigation → live (rows + watch open)  {ms(live_t)}  (upper bound: measured after)")

            # (3) a status change reaching the open page
            page.goto(url + "/", wait_until="load")
            page.wait_for_function("document.getElementById('live-state').textContent === 'live'")
            page.wait_for_timeout(300)  # the EventSource subscribed (its first comment arrived)
            seen = []
            for i, env in enumerate(envs[: args.changes]):
                row = f"row-{env['metadata']['id']}"
                phase = "stopped" if i % 2 == 0 else "failed"
                page.evaluate(_OBSERVE, [row, phase])
                t0 = report(runner, runner_id, env, phase)
                page.wait_for_function("window.__seen !== null", timeout=10_000)
                seen.append(page.evaluate("window.__seen") / 1000 - t0)
            print(f"(3) status change → visible in the open page       {ms(seen)}   target < 1000 ms: "
                  f"{'met' if max(seen) < 1.0 else 'NOT met'} (max {max(seen) * 1000:.0f} ms)")
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
