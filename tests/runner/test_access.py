"""Access end to end (issue 15): `flex exec` through a real `flex server` and a real `flex runner run` (root
and rootless) over the runner's tunnel: output, stdin, exit codes, a pty under tmux, another user's
environment 404, and killing the runner mid-session. The same environment serves the SSH checks
(tests/runner/ssh_checks.py), so SSH costs no server, runner or environment of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from flex.api import Environment
from flex.client.access import ws_url
from tests.conftest import missing
from tests.runner import ssh_checks
from tests.runner.conftest import GitServer, Mode, Runner, Server, cond, devcontainer, image_for, wait_for

pytestmark = [pytest.mark.userns, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _running(env: Environment) -> bool:
    return env.status.phase == "running" and cond(env, "Ready") == ("True", "Ready")


def flex(server: Server, token: str, *args: str, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEX_URL": server.url, "FLEX_TOKEN": token, "PYTHONPATH": str(REPO)}
    env.pop("FLEX_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "flex", *args], env=env, input=input, capture_output=True,
                          text=True, timeout=timeout, cwd="/")


def _admin_token(server: Server) -> str:
    return str(server.admin._http.headers["authorization"]).removeprefix("Bearer ")


def _exec_works(server: Server, token: str, name: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        r = flex(server, token, "exec", name, "--", "echo", "back")
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def _wait_text(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (got := (path.read_text() if path.exists() else "").replace("\r", "")):
        if time.monotonic() > deadline:
            return got
        time.sleep(0.1)
    return got


def _processes(runner: Runner) -> dict[int, tuple[int, str]]:
    """The runner's descendants: pid -> (resident KiB, command line)."""
    assert runner.proc is not None
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss=,args="], capture_output=True, text=True).stdout
    rows = {int(f[0]): (int(f[1]), int(f[2]), f[3] if len(f) > 3 else "")
            for f in (line.split(None, 3) for line in out.splitlines())}
    found, frontier = {}, {runner.proc.pid}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in rows.items() if ppid in frontier and pid not in found}
        found.update({pid: (rows[pid][1], rows[pid][2]) for pid in frontier})
    return found


@pytest.fixture
def ssh_image(mode: Mode, images: dict[str, str], workdir: Path) -> str:
    """Debian with what the SSH checks need, as `flex image bootstrap --include` makes it."""
    return image_for(images, workdir, mode, include=ssh_checks.INCLUDE)


def test_exec_and_ssh_through_the_tunnel(server: Server, runner: Runner, git_server: GitServer, ssh_image: str,
                                         tmp_path: Path) -> None:
    url = git_server.repo("acc", devcontainer(ssh_image, remoteEnv={"GREETING": "from remoteEnv"},
                                              containerEnv={"FROM_CONTAINER": "yes"}, forwardPorts=[3000],
                                              postCreateCommand="echo the hook said hi", **ssh_checks.PROPS))
    runner.join(server)
    runner.start()
    server.admin.create_environment("acc", {"source": {"git": url}, "resources": {"cpus": 0.5, "memory": "512Mi",
                                                                                    "disk": "1Gi"}})
    wait_for(server.admin, "acc", _running, runner)
    token = _admin_token(server)

    # output on both streams, remoteEnv, the workspace folder, and the exit code passed through
    r = _exec_works(server, token, "acc")
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr + runner.text()[-3000:]
    r = flex(server, token, "exec", "acc", "--", "sh", "-c",
             'echo out; echo err >&2; echo "$GREETING/$FROM_CONTAINER"; pwd; exit 3')
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\nfrom remoteEnv/yes\n/workspaces/acc\n", "err\n")

    # stdin with -i, to its end; without -i the command sees none
    r = flex(server, token, "exec", "-i", "acc", "--", "wc", "-c", input="x" * 300_000)
    assert (r.returncode, r.stdout.split()[0]) == (0, "300000"), r.stderr
    r = flex(server, token, "exec", "acc", "--", "cat", input="ignored")
    assert (r.returncode, r.stdout) == (0, "")

    # a command the container lacks: 127 and one line, as docker exec
    r = flex(server, token, "exec", "acc", "--", "no-such-command")
    assert r.returncode == 127 and "not found" in r.stderr and "Traceback" not in r.stderr

    # a pty (tmux gives the client a real terminal of 100x30): the command sees a tty of that size
    if shutil.which("tmux") is None:
        missing("tmux is not installed (installer/install.sh --dev)")
    out = tmp_path / "tty.out"
    envs = f"FLEX_URL={server.url} FLEX_TOKEN={token} PYTHONPATH={REPO}"
    cmd = f"env {envs} {sys.executable} -m flex exec -t acc -- sh -c 'tty; stty size; exit 5' > {out}; " \
          f"echo rc=$? >> {out}"
    sock = str(tmp_path / "tmux.sock")
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "100", "-y", "30", cmd], check=True)
    deadline = time.monotonic() + 60
    while "rc=" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    text = out.read_text().replace("\r", "")
    assert "/dev/pts/" in text and "30 100\n" in text and "rc=5" in text, text
    # the terminal resized mid-session: the command gets SIGWINCH and sees the new size (a WINCH as the terminal
    # settles at the start may come too: it tells the same size)
    out = tmp_path / "winch.out"
    script = 'trap "w=1" WINCH; stty size; while :; do if [ -n "$w" ]; then w=; s=$(stty size); echo "got $s"; ' \
             '[ "$s" = "40 120" ] && exit 6; fi; sleep 0.1; done'
    cmd = f"env {envs} {sys.executable} -m flex exec -t acc -- sh -c '{script}' > {out}; echo rc=$? >> {out}"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "100", "-y", "30", cmd], check=True)
    try:
        _wait_text(out, "30 100")
        subprocess.run(["tmux", "-S", sock, "resize-window", "-x", "120", "-y", "40"], check=True)
        text = _wait_text(out, "rc=")
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    assert "got 40 120\n" in text and "rc=6" in text, text

    # without typer, httpx, pydantic or websockets (flex/cli/fast_exec.py); the full command the same
    env = {**os.environ, "FLEX_URL": server.url, "FLEX_TOKEN": token, "PYTHONPATH": str(REPO)}
    env.pop("FLEX_DEBUG", None)
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "flex", "exec", "acc", "--", "echo", "lean"],
                       env=env, capture_output=True, text=True, timeout=60, cwd="/")
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert (r.returncode, r.stdout) == (0, "lean\n"), r.stderr[-2000:]
    assert not imported & {"typer", "httpx", "pydantic", "websockets"}, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "flex", "exec", "acc", "--", "sh", "-c", "echo full; exit 4"],
                       env={**env, "FLEX_DEBUG": "1"}, capture_output=True, text=True, timeout=60, cwd="/")
    assert (r.returncode, r.stdout) == (4, "full\n"), r.stderr

    # logs: hook output, and the container's (what its PID 1 writes), whole and followed (>>: the log is a
    # file, and > through /proc/1/fd/1 would truncate it)
    r = flex(server, token, "logs", "acc", "--source", "hooks")
    assert r.returncode == 0 and "the hook said hi\n" in r.stdout, r.stderr
    assert flex(server, token, "exec", "acc", "--", "sh", "-c", "echo first >> /proc/1/fd/1").returncode == 0
    r = flex(server, token, "logs", "acc")
    assert (r.returncode, r.stdout) == (0, "first\n"), r.stderr
    follow = subprocess.Popen([sys.executable, "-m", "flex", "logs", "-f", "acc"], stdout=subprocess.PIPE,
                              text=True, cwd="/", env={**os.environ, "FLEX_URL": server.url, "FLEX_TOKEN": token,
                                                       "PYTHONPATH": str(REPO)})
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "first\n"
        assert flex(server, token, "exec", "acc", "--", "sh", "-c", "echo second >> /proc/1/fd/1").returncode == 0
        assert follow.stdout.readline() == "second\n"
    finally:
        follow.kill()
        follow.communicate()

    # a web server on the container's loopback only, reached with flex port-forward; flex ports lists 3000
    serve = ('perl -MIO::Socket::INET -e \'$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 3000,'
             ' Listen => 5, ReuseAddr => 1) or die "listen: $!"; print "listening\\n"; STDOUT->flush;'
             ' while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\n\\r\\n" . ("x" x 1000000) .'
             ' "hello from 3000\\n"; close $c }\' > /tmp/web.log 2>&1 &')
    assert flex(server, token, "exec", "acc", "--", "sh", "-c", serve).returncode == 0
    r = flex(server, token, "ports", "acc")
    assert r.returncode == 0 and r.stdout.split()[2:3] == ["3000"], r.stdout
    pf = subprocess.Popen([sys.executable, "-m", "flex", "port-forward", "acc", "0:3000"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd="/", env={**os.environ, "FLEX_URL": server.url,
                                                                           "FLEX_TOKEN": token,
                                                                           "PYTHONPATH": str(REPO)})
    try:
        assert pf.stdout is not None
        line = pf.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:") and line.strip().endswith("-> acc:3000"), line
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

    # no permessage-deflate on these streams (deflating every message of a byte stream costs more CPU than it
    # saves): a client that asks for it, as websockets does by default, gets the bytes uncompressed
    with connect(ws_url(server.url, "/api/v1/environments/acc/ports/3000"), proxy=None,
                 additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions") or "")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.send(b"GET / HTTP/1.0\r\n\r\n")
        got = b"".join(bytes(m) for m in ws if isinstance(m, bytes))
    assert got.endswith(b"\r\n\r\n" + b"x" * 1_000_000 + b"hello from 3000\n")

    # the same server through its preview URL (tests/runner/test_preview.py has the rest), root and rootless
    r = httpx.get(f"{server.url}/p/admin/acc/3000/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert (r.status_code, r.text) == (200, "x" * 1_000_000 + "hello from 3000\n")

    # another user's environment is 404, exactly as one that does not exist
    bob = server.admin.create_user("bob").token
    r = flex(server, bob, "exec", "acc", "--", "true")
    assert r.returncode == 3 and "not found" in r.stderr, r.stderr
    r = flex(server, bob, "logs", "acc")
    assert r.returncode == 3 and "not found" in r.stderr and r.stdout == "", r.stderr
    r = flex(server, bob, "port-forward", "acc", "0:3000")
    assert r.returncode == 3 and "not found" in r.stderr, r.stderr
    assert flex(server, token, "exec", "nope", "--", "true").returncode == 3
    r = flex(server, "flexu_not-a-token", "exec", "acc", "--", "true")
    assert r.returncode == 5, r.stderr

    # SSH, in this environment (ssh_checks.py)
    ssh = ssh_checks.client(server, token, tmp_path)
    ssh_checks.check_ssh(ssh, server, runner, "acc", token, bob)

    # the runner dies mid-session: the client gets one clear line and exit 6; once it is back, exec works
    env = {**os.environ, "FLEX_URL": server.url, "FLEX_TOKEN": token, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-m", "flex", "exec", "-i", "acc", "--", "sh", "-c",
                           "echo started; cat"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd="/") as session:  # closed even if a check fails
        try:
            assert session.stdout is not None and session.stdout.readline() == "started\n"
            ssh_session = ssh.session("acc.flex")
            runner.stop(signal.SIGKILL)
            _, err = session.communicate(timeout=30)
        except BaseException:
            session.kill()
            raise
    assert session.returncode == 6 and "runner" in err and "lost" in err and "Traceback" not in err, err
    ssh_checks.lost(ssh_session)
    r = flex(server, token, "exec", "acc", "--", "true")
    assert r.returncode == 6 and "not connected" in r.stderr, r.stderr
    runner.start()
    r = _exec_works(server, token, "acc")
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr
    ssh_checks.back_and_remove(ssh, "acc")

    # idle auto-stop: an open session keeps the environment running past its idleTimeout; once it closes,
    # the control plane stops the environment, with reason Idle in the audit log
    before = _processes(runner)
    held = subprocess.Popen([sys.executable, "-m", "flex", "exec", "-i", "acc", "--", "sh", "-c", "echo held; cat"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert held.stdout is not None and held.stdout.readline() == "held\n"
    # an open session costs the runner crun and the command: a few MiB, not a process of ours (~25 MiB)
    added = {pid: p for pid, p in _processes(runner).items() if pid not in before}
    assert sum(rss for rss, _ in added.values()) < 12 * 1024, added
    server.admin.patch_environment("acc", {"spec": {"idleTimeout": "2s"}})
    time.sleep(5)  # more than twice the timeout: the sweep ran, and the open session kept it running
    assert server.admin.get_environment("acc").spec.desired_phase == "running"
    held.communicate(input="", timeout=30)
    stopped = wait_for(server.admin, "acc", lambda e: e.spec.desired_phase == "stopped", runner, timeout=30)
    assert stopped.spec.idle_timeout == 2
    events = [e for e in server.admin.audit_events(limit=100).items if e.action == "environment.idle-stop"]
    assert [(e.actor, e.resource, e.details.get("reason")) for e in events] == [("system", "environment:admin/acc",
                                                                                 "Idle")]
