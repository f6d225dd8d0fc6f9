"""Operating the server (issue 12, point 6), through the real `flex server` process on SQLite and PostgreSQL:
HTTPS with --tls-cert/--tls-key, forwarded headers trusted only from configured proxies, the failed-auth
limiter keyed on the real client, no database password in anything printed, and /metrics."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_flex
from tests.controlplane.conftest import Api, Postgres, free_port
from tests.controlplane.server_process import make_certificate, start

GIT = "https://host/org/repo.git"


def test_tls_serves_https_with_the_given_certificate(tmp_path: Path, backend: str | None) -> None:
    ca, cert, key = make_certificate(tmp_path / "tls")
    trust = ssl.create_default_context(cafile=str(ca))
    server = start(tmp_path / "home", "--tls-cert", str(cert), "--tls-key", str(key), backend=backend,
                   verify=trust, https=True)
    try:
        with server.client(server.admin_token) as admin:
            r = admin.post("/api/v1/environments", json={"name": "e1", "spec": {"source": {"git": GIT}}})
            assert r.status_code == 201 and r.url.scheme == "https"
            assert admin.get("/api/v1/environments/e1").json()["metadata"]["name"] == "e1"
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA refuses the server
            httpx.get(server.url + "/healthz", timeout=5)
        with pytest.raises(httpx.TransportError):  # and plain HTTP is not served on that port
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        log = server.stop()
    assert f"on {server.url} " in log


def test_bad_tls_flags_are_one_line(tmp_path: Path) -> None:
    _, cert, key = make_certificate(tmp_path / "tls")
    env = {"FLEX_HOME": str(tmp_path / "home")}
    listen = ["--listen", f"127.0.0.1:{free_port()}"]
    r = run_flex("server", *listen, "--tls-cert", str(cert), env=env)
    assert r.code == 2 and r.stderr.startswith("error: --tls-cert and --tls-key go together"), r.stderr
    r = run_flex("server", *listen, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key), env=env)
    assert r.code == 2 and "cannot load them" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 2  # error line, hint line
    r = run_flex("server", *listen, "--proxy-trusted-origins", "10.0.0.0/8,not-an-ip", env=env)
    assert r.code == 7 and "'not-an-ip' is not an IP address or CIDR" in r.stderr and "Traceback" not in r.stderr


def _bad_logins(c: httpx.Client, n: int, forwarded_for: str) -> list[int]:
    return [c.get("/api/v1/environments", headers={"Authorization": "Bearer flexu_wrong",
                                                   "X-Forwarded-For": forwarded_for}).status_code for _ in range(n)]


def test_forwarded_headers_count_only_from_trusted_proxies(tmp_path: Path, backend: str | None) -> None:
    env = {"FLEX_SERVER_AUTH_FAILURES_PER_MINUTE": "5"}
    # Untrusted (the default, even from 127.0.0.1): X-Forwarded-For is ignored, so the peer is the client.
    direct = start(tmp_path / "direct", backend=backend, env=env)
    try:
        token = direct.admin_token
        with direct.client() as c:
            assert _bad_logins(c, 6, "203.0.113.1") == [401] * 5 + [429]
            r = c.get("/api/v1/environments", headers={"Authorization": f"Bearer {token}",
                                                       "X-Forwarded-For": "203.0.113.2"})
            assert r.status_code == 429  # a claimed address does not get around the limit
    finally:
        direct.stop()


def test_the_limiter_keys_on_the_real_client_behind_a_proxy(tmp_path: Path, backend: str | None) -> None:
    env = {"FLEX_SERVER_AUTH_FAILURES_PER_MINUTE": "5"}
    proxied = start(tmp_path / "proxied", "--proxy-trusted-origins", "127.0.0.1/32,10.9.0.0/16",
                    backend=backend, env=env)
    try:
        good = {"Authorization": f"Bearer {proxied.admin_token}"}
        with proxied.client() as c:
            # the proxies append what they saw; the client's own claim (leftmost) is not believed
            assert _bad_logins(c, 6, "198.51.100.7, 203.0.113.1, 10.9.0.3") == [401] * 5 + [429]
            assert c.get("/api/v1/environments", headers={**good, "X-Forwarded-For": "203.0.113.1"}).status_code == 429
            spoof = {**good, "X-Forwarded-For": "203.0.113.99, 203.0.113.1"}
            assert c.get("/api/v1/environments", headers=spoof).status_code == 429
            # everyone else behind the same proxy is unaffected, and so is the proxy itself
            assert c.get("/api/v1/environments", headers={**good, "X-Forwarded-For": "203.0.113.2"}).status_code == 200
            assert c.get("/api/v1/environments", headers=good).status_code == 200
            assert _bad_logins(c, 1, "203.0.113.2") == [401]
    finally:
        proxied.stop()


def test_a_database_password_is_never_printed(tmp_path: Path) -> None:
    password = "Hunter2-pw-5f3c"
    r = run_flex("--debug", "server", "--db", f"postgresql://flex:{password}@127.0.0.1:{free_port()}/x",
                 "--listen", f"127.0.0.1:{free_port()}", env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 6, r.stderr
    assert "error: cannot migrate database 'postgresql://flex:***@127.0.0.1:" in r.stderr  # after the traceback
    assert password not in r.stderr and password not in r.stdout
    r = run_flex("server", "--db", f"postgresql://flex@127.0.0.1:{free_port()}/x?password={password}",
                 "--listen", f"127.0.0.1:{free_port()}", env={"FLEX_HOME": str(tmp_path)})
    assert r.code == 6 and "password=***" in r.stderr and password not in r.stderr, r.stderr


@pytest.mark.postgres
def test_a_database_password_is_not_in_the_running_servers_output(tmp_path: Path, postgres: Postgres) -> None:
    password = "Hunter2-pw-5f3c"
    with postgres.database() as url:  # the test server trusts every password
        server = start(tmp_path / "home", "--log-level", "debug",
                       backend=url.replace("postgres@", f"postgres:{password}@"))
        try:
            with server.client(server.admin_token) as admin:
                assert admin.get("/readyz").status_code == 200
        finally:
            log = server.stop()
    assert "(database: postgresql://postgres:***@127.0.0.1:" in log and password not in log


_SAMPLE = re.compile(r'^(flex_[a-z_]+)(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+]+|\+Inf)$')


def _parse(text: str) -> dict[str, float]:
    """Prometheus text format, strictly: HELP/TYPE comments and `name{labels} value` samples only."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("# HELP flex_", "# TYPE flex_")):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a flex_ sample: {line!r}"
        samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return samples


async def test_metrics_in_prometheus_format(live: Api) -> None:
    join = (await live.admin.create_join_token()).token
    runner = await live.client(None).join(join, "r1", "vm", {"cpus": 8, "memory": "32Gi", "disk": "200Gi"})
    user_token = (await live.admin.create_user("alice")).token
    alice = live.client(user_token)
    for name in ("secret-project", "e2"):
        await alice.create_environment(name, git=GIT)
    await alice.get_environment("secret-project")
    raw = live.raw(live.admin_token)
    async with live.raw(runner.credential).stream("GET", f"/api/v1/runners/{runner.id}/environments",
                                                  params={"watch": 1}):
        await live.watching(1)
        r = await raw.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _parse(r.text)
    assert samples['flex_environments{phase="pending"}'] == 2 and samples['flex_environments{phase="running"}'] == 0
    assert samples['flex_runners{state="ready"}'] == 1 and samples['flex_runners{state="offline"}'] == 0
    assert samples["flex_watchers"] == 1
    route = 'method="GET",route="/api/v1/environments/{name}"'
    assert samples[f'flex_http_requests_total{{{route},code="200"}}'] == 1
    assert samples[f'flex_http_request_duration_seconds_count{{{route}}}'] == 1
    assert samples[f'flex_http_request_duration_seconds_bucket{{{route},le="+Inf"}}'] == 1
    assert "secret-project" not in r.text  # routes are templates: no names from URLs
    assert (await live.raw(None).get("/metrics")).status_code == 401
    assert (await live.raw(user_token).get("/metrics")).status_code == 403
