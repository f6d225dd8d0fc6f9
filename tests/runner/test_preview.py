"""Preview URLs end to end (issue 15): `/p/{owner}/{env}/{port}/` through a real `flex server` and a real
`flex runner run` over the runner's tunnel, to a web app in the environment (tests/runner/data/web.pl, in the
image's perl): without auth (401, or a browser's redirect to the sign-in step), with a Bearer token, with the
preview cookie a web UI session mints (scoped to the port's path), a public port, a WebSocket, what the app
sees and what the browser gets back, another user's 404, `status.ports[].url`, and a stopped environment's 503."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flex.api import Environment
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for
from tests.runner.test_access import _admin_token, flex

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]

WEB = (Path(__file__).parent / "data" / "web.pl").read_text()


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready")


def _sign_in(web: httpx.Client, token: str) -> None:
    pre = re.search(r'name="_csrf" value="([^"]+)"', web.get("/signin").text)
    assert pre is not None
    r = web.post("/signin", data={"_csrf": pre.group(1), "token": token}, headers={"Origin": str(web.base_url)})
    assert r.status_code == 303, r.text


def _serve(server: Server, token: str, port: int) -> None:
    r = flex(server, token, "exec", "prev", "--", "sh", "-c",
             f"perl /workspaces/prev/web.pl {port} > /tmp/web{port}.log 2>&1 &")
    assert r.returncode == 0, r.stderr


def test_preview_urls(server: Server, runner: Runner, git_server: GitServer, image: str) -> None:
    url = git_server.repo("prev", {**devcontainer(image, forwardPorts=[3000, 3002],
                                                 portsAttributes={"3002": {"visibility": "public"}}), "web.pl": WEB})
    rid = runner.join(server)
    runner.start()
    server.admin.create_environment("prev", {"source": {"git": url}, "ports": [{"port": 3001, "visibility": "public"}],
                                             "resources": {"cpus": 0.5, "memory": "512Mi", "disk": "1Gi"}})
    env = wait_for(server.admin, "prev", _running, runner)
    token = _admin_token(server)
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/p/admin/prev"

    # status.ports[].url: the preview URL of each forwarded port
    assert [(p.port, p.url) for p in env.status.ports] == [(3000, f"{base}/3000/"), (3001, f"{base}/3001/"),
                                                           (3002, f"{base}/3002/")]

    _serve(server, token, 3000)
    _serve(server, token, 3001)
    deadline = time.monotonic() + 30
    while (r := httpx.get(f"{base}/3000/hello?x=1", headers=auth, timeout=30)).status_code == 503:
        assert time.monotonic() < deadline, r.text  # the app in the environment may still be starting
        time.sleep(0.2)

    # with a Bearer token: the app's answer, and what it was sent: its own Host, where it was reached, and
    # neither the flex token nor flex's cookies
    r = httpx.get(f"{base}/3000/hello?x=1", headers={**auth, "Cookie": "flex_session=s; theirs=1; flex_preview=p"},
                  timeout=30)
    assert r.status_code == 200, r.text
    seen = r.text.splitlines()
    assert seen[0] == "GET /hello?x=1 HTTP/1.1"
    assert {"host: localhost:3000", "x-forwarded-prefix: /p/admin/prev/3000", "x-forwarded-proto: http",
            f"x-forwarded-host: {server.url.removeprefix('http://')}", "cookie: theirs=1"} <= set(seen), seen
    assert not any(line.startswith(("authorization", "x-forwarded-for: 6")) or "flex_" in line for line in seen)
    # the app's cookie stays inside its preview path; its redirect to /elsewhere stays under the prefix
    assert r.headers["set-cookie"] == "app=1; Path=/p/admin/prev/3000/"
    r = httpx.get(f"{base}/3000/redirect", headers=auth)
    assert (r.status_code, r.headers["location"]) == (302, "/p/admin/prev/3000/elsewhere")
    # a body larger than the API's limit streams through (the 4 MiB limit is the API's, not the app's)
    r = httpx.post(f"{base}/3000/upload", headers=auth, content=b"x" * (5 * 2**20), timeout=60)
    assert r.status_code == 200 and "body: 5242880" in r.text, r.text

    # without credentials: 401 for a program, the sign-in step for a browser, on a port that exists or not
    r = httpx.get(f"{base}/3000/hello")
    assert (r.status_code, r.headers.get("www-authenticate")) == (401, 'Bearer realm="flex"'), r.text
    r = httpx.get(f"{base}/3000/hello?x=1", headers={"Accept": "text/html"})
    assert (r.status_code, r.headers["location"]) == (302, "/preview/signin?next=" +
                                                      quote("/p/admin/prev/3000/hello?x=1", safe=""))
    assert httpx.get(f"{server.url}/p/nobody/nothing/3000/").status_code == 401

    # a browser signed in to the web UI: the sign-in step mints a cookie for this port's path only
    with httpx.Client(base_url=server.url, timeout=30) as web:
        _sign_in(web, token)
        r = web.get("/preview/signin", params={"next": "/p/admin/prev/3000/hello"})
        assert (r.status_code, r.headers["location"]) == (303, "/p/admin/prev/3000/hello")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("flex_preview=") and "; HttpOnly;" in cookie, cookie
        assert "Path=/p/admin/prev/3000/;" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie, cookie
        r = web.get("/p/admin/prev/3000/hello")
        assert r.status_code == 200 and r.text.startswith("GET /hello HTTP/1.1"), r.text
        assert "flex_" not in r.text
        value = web.cookies.get("flex_preview", path="/p/admin/prev/3000/")
        # the cookie opens that port only: not another port of the same environment
        r = httpx.get(f"{base}/4000/", cookies={"flex_preview": value})
        assert r.status_code == 401
    # a browser from another site with no session yet: one same-site reload, then the UI's sign-in
    r = httpx.get(f"{server.url}/preview/signin", params={"next": "/p/admin/prev/3000/"})
    assert r.status_code == 200 and "retry=1" in r.text
    r = httpx.get(f"{server.url}/preview/signin", params={"next": "/p/admin/prev/3000/", "retry": 1})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=%2Fpreview%2Fsignin")

    # a public port: anyone, no credentials; served in a CSP sandbox (it shares the control plane's origin)
    r = httpx.get(f"{base}/3001/")
    assert r.status_code == 200 and r.text.startswith("GET / HTTP/1.1"), r.text
    assert r.headers["content-security-policy"].startswith("sandbox allow-scripts")
    # public by the devcontainer's portsAttributes too: no sign-in asked, just nothing listening there yet
    r = httpx.get(f"{base}/3002/")
    assert r.status_code == 503 and "nothing answers on port 3002" in r.json()["error"]["message"], r.text

    # a WebSocket through the proxy: text and binary messages, both ways
    with connect(f"{base.replace('http', 'ws', 1)}/3000/echo", additional_headers=auth) as ws:
        ws.send("hi")
        assert ws.recv(timeout=30) == "echo: hi"
        ws.send(b"\x00\x01" * 40_000)
        assert ws.recv(timeout=30) == b"\x00\x01" * 40_000
    with pytest.raises(InvalidStatus) as denied:
        connect(f"{base.replace('http', 'ws', 1)}/3000/echo").close()
    assert denied.value.response.status_code == 401

    # another user: 404, as for an environment that does not exist, on every way in
    bob = server.admin.create_user("bob").token
    bob_auth = {"Authorization": f"Bearer {bob}"}
    assert httpx.get(f"{base}/3000/", headers=bob_auth).status_code == 404
    assert httpx.get(f"{server.url}/p/admin/nothing/3000/", headers=bob_auth).status_code == 404
    with pytest.raises(InvalidStatus) as denied:
        connect(f"{base.replace('http', 'ws', 1)}/3000/echo", additional_headers=bob_auth).close()
    assert denied.value.response.status_code == 404
    with httpx.Client(base_url=server.url) as web:
        _sign_in(web, bob)
        r = web.get("/preview/signin", params={"next": "/p/admin/prev/3000/"})
        assert r.status_code == 404 and "set-cookie" not in r.headers

    # the owner's stopped environment: a clear 503, a page for a browser
    server.admin.patch_environment("prev", {"spec": {"desiredPhase": "stopped"}})
    wait_for(server.admin, "prev", lambda e: e.status.phase == "stopped", runner)
    r = httpx.get(f"{base}/3000/", headers=auth)
    assert r.status_code == 503 and "not running" in r.json()["error"]["message"], r.text
    r = httpx.get(f"{base}/3000/", headers={**auth, "Accept": "text/html"})
    assert r.status_code == 503 and "flex start prev" in r.text

    # a runner-wide idle default: `flex runner run --idle-timeout` applies where the spec sets no idleTimeout
    r = runner.cli("runner", "run", "--idle-timeout", "soon")
    assert r.returncode != 0 and "--idle-timeout 'soon'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    runner.stop()
    runner.start(None, "--idle-timeout", "3s")
    deadline = time.monotonic() + 30
    while server.admin.get_runner(rid).idle_timeout != 3:
        assert time.monotonic() < deadline, runner.text()[-3000:]
        time.sleep(0.2)
    server.admin.patch_environment("prev", {"spec": {"desiredPhase": "running"}})
    # no wait for Ready here: the idle clock starts at phase running, and a loaded machine may take 3 s to Ready
    stopped = wait_for(server.admin, "prev", lambda e: e.spec.desired_phase == "stopped", runner, timeout=60)
    assert stopped.spec.idle_timeout is None
    events = [e for e in server.admin.audit_events(limit=100).items if e.action == "environment.idle-stop"]
    assert [(e.resource, e.details.get("reason")) for e in events] == [("environment:admin/prev", "Idle")]
    assert events[0].details.get("idle_seconds", 0) >= 3, events[0].details
