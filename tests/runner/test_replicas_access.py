"""Access through several control-plane replicas (issue 15; docs/access.md, "Several replicas"): two real
`flex server` processes on one PostgreSQL, a real root runner whose tunnel is on replica A (it reaches the
control plane through a TCP load balancer on 127.0.0.1, as in production), and the user talking to replica
B only: exec (exit codes, stdout/stderr apart, stdin), logs (whole and followed), a port-forward and a
preview URL are forwarded to A;
a stalled client grows neither replica's memory; kill -9 of A is a clear error on B at once; once the
runner reconnects (the balancer now sends it to B), exec works again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flex.api import Environment
from flex.client import FlexClient
from tests.controlplane.conftest import Postgres, free_port, postgres  # noqa: F401  (the fixture)
from tests.runner.conftest import GitServer, Runner, Server, cond, devcontainer, wait_for
from tests.runtime.containers.conftest import Mode, image_for

pytestmark = [pytest.mark.userns, pytest.mark.postgres, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


class Balancer:
    """A TCP load balancer: each new connection goes to the replica port ``target`` names at that moment."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        _copy(client, upstream)

    def close(self) -> None:
        self.sock.close()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):  # either direction ending ends the connection, as a proxy's close does
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _replica(tmp_path: Path, name: str, db: str, key: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "FLEX_HOME": str(tmp_path / name), "FLEX_SERVER_SECRET_KEY_FILE": str(key)}
    with open(tmp_path / f"{name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flex", "server", "--db", db, "--listen",
                                 f"127.0.0.1:{port}", "--heartbeat-timeout", "60"], env=env, stdout=log,
                                stderr=log, text=True)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"flex server exited: {(tmp_path / f'{name}.log').read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("flex server did not become ready")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(url: str, token: str) -> dict[str, str]:
    env = {**os.environ, "FLEX_URL": url, "FLEX_TOKEN": token, "PYTHONPATH": str(REPO)}
    env.pop("FLEX_DEBUG", None)
    return env


def flex(url: str, token: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flex", *args], env=_env(url, token), input=input,
                          capture_output=True, text=True, timeout=60, cwd="/")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready")


@pytest.fixture
def database(postgres: Postgres) -> Iterator[str]:  # noqa: F811
    with postgres.database() as url:
        yield url


@pytest.mark.parametrize("mode", ["root"], indirect=True)
def test_streams_landing_on_another_replica_are_forwarded(
        database: str, mode: Mode, images: dict[str, str], workdir: Path, runner: Runner, git_server: GitServer,
        tmp_path: Path) -> None:
    key = tmp_path / "secret-key"
    a, a_port = _replica(tmp_path, "a", database, key)
    b, b_port = _replica(tmp_path, "b", database, key)
    lb = Balancer(a_port)
    b_url = f"http://127.0.0.1:{b_port}"
    token = (tmp_path / "a" / "server" / "admin-token").read_text().strip()
    try:
        with FlexClient(f"http://127.0.0.1:{lb.port}", token) as admin:
            url = git_server.repo("rep", devcontainer(image_for(images, workdir, mode), forwardPorts=[3000]))
            runner.join(Server(f"http://127.0.0.1:{lb.port}", a, admin))
            runner.start()
            admin.create_environment("rep", {"source": {"git": url},
                                             "resources": {"cpus": 0.5, "memory": "512Mi", "disk": "1Gi"}})
            wait_for(admin, "rep", _running, runner)
            _forwarded(b_url, token, runner, a, b)
            _replica_killed(b_url, token, runner, a, lb, b_port)
    finally:
        lb.close()
        _stop(a)
        _stop(b)


def _exec_works(url: str, token: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        r = flex(url, token, "exec", "rep", "--", "echo", "back")
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def _forwarded(b_url: str, token: str, runner: Runner, a: subprocess.Popen[str], b: subprocess.Popen[str]) -> None:
    # exec through B: output on both streams and the exit code, as a direct stream gives them
    r = _exec_works(b_url, token)
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr + runner.text()[-3000:]
    r = flex(b_url, token, "exec", "rep", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = flex(b_url, token, "exec", "-i", "rep", "--", "wc", "-c", input="x" * 600_000)  # > 2 windows
    assert (r.returncode, r.stdout.split()[0]) == (0, "600000"), r.stderr
    r = flex(b_url, token, "exec", "rep", "--", "no-such-command")
    assert r.returncode == 127 and "not found" in r.stderr and "Traceback" not in r.stderr

    # the container's log through B, whole and followed (>>: the log is a file)
    assert flex(b_url, token, "exec", "rep", "--", "sh", "-c", "echo first >> /proc/1/fd/1").returncode == 0
    r = flex(b_url, token, "logs", "rep")
    assert (r.returncode, r.stdout) == (0, "first\n"), r.stderr
    follow = subprocess.Popen([sys.executable, "-m", "flex", "logs", "-f", "rep"], stdout=subprocess.PIPE, text=True,
                              cwd="/", env=_env(b_url, token))
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "first\n"
        assert flex(b_url, token, "exec", "rep", "--", "sh", "-c", "echo second >> /proc/1/fd/1").returncode == 0
        assert follow.stdout.readline() == "second\n"
    finally:
        follow.kill()
        follow.communicate()

    # a port-forward byte round trip and the preview URL, through B
    serve = ('perl -MIO::Socket::INET -e \'$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 3000,'
             ' Listen => 5, ReuseAddr => 1) or die "listen: $!"; while ($c = $s->accept) { <$c>;'
             ' print $c "HTTP/1.0 200 OK\\r\\n\\r\\n" . ("x" x 1000000) . "hello from 3000\\n"; close $c }\''
             ' > /tmp/web.log 2>&1 &')
    assert flex(b_url, token, "exec", "rep", "--", "sh", "-c", serve).returncode == 0
    pf = subprocess.Popen([sys.executable, "-m", "flex", "port-forward", "rep", "0:3000"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd="/", env=_env(b_url, token))
    try:
        assert pf.stdout is not None
        line = pf.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), line
        local = int(line.split("127.0.0.1:")[1].split()[0])
        deadline = time.monotonic() + 20
        while True:  # the server in the environment may still be starting
            try:
                body = httpx.get(f"http://127.0.0.1:{local}/", timeout=20).text
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert body == "x" * 1_000_000 + "hello from 3000\n"
    finally:
        pf.kill()
        pf.communicate()
    page = httpx.get(f"{b_url}/p/admin/rep/3000/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert (page.status_code, page.text) == (200, "x" * 1_000_000 + "hello from 3000\n")

    # a client that stops reading an endless output: neither replica's memory grows (flow control per hop)
    stalled = subprocess.Popen([sys.executable, "-m", "flex", "exec", "rep", "--", "cat", "/dev/zero"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(b_url, token), cwd="/")
    try:
        time.sleep(3)
        before = _rss(a.pid), _rss(b.pid)
        time.sleep(4)
        after = _rss(a.pid), _rss(b.pid)
        assert stalled.poll() is None
        assert all(x - y < 16 * 2**20 for x, y in zip(after, before, strict=True)), (before, after)
    finally:
        stalled.kill()
        stalled.communicate()


def _replica_killed(b_url: str, token: str, runner: Runner, a: subprocess.Popen[str], lb: Balancer,
                    b_port: int) -> None:
    # a session forwarded through B when A dies: one clear line and exit 6, as a lost tunnel gives
    session = subprocess.Popen([sys.executable, "-m", "flex", "exec", "-i", "rep", "--", "sh", "-c",
                                "echo started; cat"], env=_env(b_url, token), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    assert session.stdout is not None and session.stdout.readline() == "started\n"
    a.send_signal(signal.SIGKILL)
    a.wait()
    _, err = session.communicate(timeout=30)
    assert session.returncode == 6 and "lost" in err and "Traceback" not in err, err

    # A's entry is still in the database (and fresh): B must not send the stream into the void
    started = time.monotonic()
    r = flex(b_url, token, "exec", "rep", "--", "true")
    took = time.monotonic() - started
    assert r.returncode == 6 and "not connected" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # error + hint
    assert took < 10, took

    # the balancer now sends the runner to B: it reconnects there, and exec through B works again
    lb.target = b_port
    r = _exec_works(b_url, token, timeout=45)
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr + runner.text()[-3000:]
