"""SSH end to end (issue 15), run in test_access's environment (no environment of its own: CI time): the system
ssh, scp and sftp clients through `flex config-ssh`'s block, a real `flex server` and a real `flex runner run`
(root and rootless): commands and exit codes, a pty under tmux, files both ways with the right owner inside,
`ssh -L` and `-R`, agent forwarding, postAttachCommand once, another user's environment 404, killing the runner
mid-session, and `config-ssh --remove` leaving ~/.ssh/config as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import missing
from tests.controlplane.conftest import free_port
from tests.runner.conftest import Runner, Server

REPO = Path(__file__).resolve().parents[2]
# what a user had in ~/.ssh/config before (no newline at its end: --remove must give back exactly this)
BEFORE = "# mine\nHost example\n    User me\n    Port 2222"
# the devcontainer.json properties these checks need (with test_access's remoteEnv GREETING="from remoteEnv")
PROPS = {"postAttachCommand": "echo attached >> /tmp/attach.log"}
INCLUDE = ("openssh-client", "openssh-sftp-server")  # ssh-add (agent forwarding) and sftp-server


@dataclass
class Client:
    """A user's machine: a home with an ~/.ssh/config that `flex config-ssh` writes into."""

    tmp: Path
    home: Path
    config: Path
    env: dict[str, str]

    def flex(self, *args: str, e: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flex", *args], env=e or self.env, capture_output=True,
                              text=True, timeout=60, cwd="/")

    # ssh reads the config of the passwd entry's home, not $HOME's: -F names the one config-ssh wrote
    def ssh(self, *args: str, tool: str = "ssh") -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "-F", str(self.config), *args], env=self.env, capture_output=True, text=True,
                              timeout=60, cwd=str(self.tmp))

    def session(self, host: str) -> subprocess.Popen[str]:
        """An ssh session that has printed "started" and waits on its stdin."""
        p = subprocess.Popen(["ssh", "-F", str(self.config), host, "echo started; cat"], env=self.env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd="/")
        assert p.stdout is not None and p.stdout.readline() == "started\n"
        return p


def client(server: Server, token: str, tmp_path: Path) -> Client:
    """`flex config-ssh` into a home that had a config of its own, twice (idempotent)."""
    for tool in ("ssh", "scp", "sftp", "ssh-agent", "tmux"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (installer/install.sh --dev)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    config = home / ".ssh" / "config"
    config.write_text(BEFORE)
    env = {**os.environ, "HOME": str(home), "FLEX_URL": server.url, "FLEX_TOKEN": token, "PYTHONPATH": str(REPO)}
    for k in ("FLEX_DEBUG", "XDG_CONFIG_HOME", "SSH_AUTH_SOCK"):
        env.pop(k, None)
    c = Client(tmp_path, home, config, env)
    r = c.flex("config-ssh")
    assert r.returncode == 0, r.stderr
    written = config.read_text()
    assert written.startswith(BEFORE + "\n") and "Host *.flex" in written
    assert c.flex("config-ssh").returncode == 0 and config.read_text() == written  # idempotent
    return c


def check_ssh(c: Client, server: Server, runner: Runner, name: str, token: str, bob: str) -> None:
    """Everything but the runner's death (see lost_and_back): ``name`` runs, with PROPS; ``bob`` is another
    user's token."""
    host = f"{name}.flex"
    # a command, its output, remoteEnv, the workspace folder and the exit status; no host key prompt
    r = c.ssh(host, "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr + runner.text()[-3000:]
    r = c.ssh(host, 'echo "$GREETING"; pwd; echo err >&2; exit 7')
    assert (r.returncode, r.stdout, r.stderr) == (7, "from remoteEnv\n/workspaces/" + name + "\n", "err\n")
    known_hosts = c.home / ".config" / "flex" / "ssh" / "known_hosts"
    assert known_hosts.read_text().startswith(f"{host} ssh-ed25519 ")
    key = runner.mode.home / "runner" / "ssh_host_ed25519_key"
    assert key.stat().st_mode & 0o777 == 0o600
    # `flex ssh ENV CMD` is the same through the system ssh
    r = c.flex("ssh", name, "echo", "via flex ssh")
    assert (r.returncode, r.stdout) == (0, "via flex ssh\n"), r.stderr

    # the ProxyCommand alone carries the SSH server's bytes, without typer, httpx or websockets (flex/cli/fast_ssh.py)
    proxy = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "flex", "ssh", "--stdio", host],
                             env=c.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd="/")
    assert proxy.stdout is not None
    banner = proxy.stdout.readline()
    _, err = proxy.communicate(input=b"", timeout=30)  # our stdin ends: so does the proxy
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.decode().splitlines() if "|" in line}
    assert banner.startswith(b"SSH-2.0-") and proxy.returncode == 0, banner + err[-2000:]
    assert not imported & {"typer", "httpx", "pydantic", "websockets"}, err[-2000:]

    # postAttachCommand ran on the first attach, and only then
    r = c.ssh(host, "cat /tmp/attach.log")
    assert (r.returncode, r.stdout) == (0, "attached\n"), r.stderr

    # a pty (tmux gives the client a terminal of 100x30): the shell sees a tty of that size
    out = c.tmp / "ssh-tty.out"
    envs = " ".join(f"{k}={c.env[k]}" for k in ("HOME", "FLEX_URL", "FLEX_TOKEN", "PYTHONPATH"))
    cmd = f"env {envs} ssh -F {c.config} -t {host} 'tty; stty size; exit 5' > {out}; echo rc=$? >> {out}"
    sock = str(c.tmp / "ssh-tmux.sock")
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "100", "-y", "30", cmd], check=True)
    deadline = time.monotonic() + 60
    while "rc=" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    text = out.read_text().replace("\r", "")
    assert "/dev/pts/" in text and "30 100\n" in text and "rc=5" in text, text

    # scp both ways, and sftp: files land as the remoteUser (root inside, through any id map)
    local = c.tmp / "up.bin"
    local.write_bytes(os.urandom(300_000))
    r = c.ssh(str(local), f"{host}:/tmp/up.bin", tool="scp")
    assert r.returncode == 0, r.stderr
    r = c.ssh(f"{host}:/tmp/up.bin", str(c.tmp / "down.bin"), tool="scp")
    assert r.returncode == 0 and (c.tmp / "down.bin").read_bytes() == local.read_bytes(), r.stderr
    batch = c.tmp / "batch"
    batch.write_text(f"put {local} /tmp/sftp.bin\nls /tmp\nget /tmp/sftp.bin {c.tmp / 'sftp.bin'}\n")
    r = c.ssh("-b", str(batch), host, tool="sftp")
    assert r.returncode == 0 and "/tmp/sftp.bin" in r.stdout, r.stdout + r.stderr
    assert (c.tmp / "sftp.bin").read_bytes() == local.read_bytes()
    r = c.ssh(host, "stat -c '%U:%G %s' /tmp/up.bin /tmp/sftp.bin")
    assert r.stdout == "root:root 300000\nroot:root 300000\n", r.stdout + r.stderr

    # ssh -L to a web server on the environment's loopback only (3001: test_access's is on 3000)
    serve = ('perl -MIO::Socket::INET -e \'$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 3001,'
             ' Listen => 5, ReuseAddr => 1) or die "listen: $!"; while ($c = $s->accept) { <$c>;'
             ' print $c "HTTP/1.0 200 OK\\r\\n\\r\\n" . ("x" x 1000000) . "hello from 3001\\n"; close $c }\''
             ' > /tmp/web3001.log 2>&1 < /dev/null &')
    assert c.ssh(host, serve).returncode == 0
    port = free_port()
    fwd = subprocess.Popen(["ssh", "-F", str(c.config), "-N", "-o", "ExitOnForwardFailure=yes", "-L",
                            f"127.0.0.1:{port}:localhost:3001", host], env=c.env, stderr=subprocess.PIPE,
                           text=True, cwd="/")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/", timeout=20).text
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or fwd.poll() is not None:
                    raise
                time.sleep(0.2)
        assert body == "x" * 1_000_000 + "hello from 3001\n"
    finally:
        fwd.kill()
        fwd.communicate()

    # ssh -R: a port on the environment's loopback reaches a server on the client's machine
    listener = socket.create_server(("127.0.0.1", 0))
    host_port = listener.getsockname()[1]

    def greet() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"hello from the client's side\n")

    threading.Thread(target=greet, daemon=True).start()
    fetch = ('perl -MIO::Socket::INET -e \'$s = IO::Socket::INET->new("127.0.0.1:4500") or die "connect: $!";'
             ' print <$s>\'')
    r = c.ssh("-o", "ExitOnForwardFailure=yes", "-R", f"4500:127.0.0.1:{host_port}", host, fetch)
    listener.close()
    assert (r.returncode, r.stdout) == (0, "hello from the client's side\n"), r.stdout + r.stderr
    r = c.ssh(host, fetch)  # the session is over: so is its listener
    assert r.returncode != 0 and "connect:" in r.stderr, r.stdout + r.stderr

    # agent forwarding: the client's key is listed by ssh-add inside
    agent_sock = str(c.tmp / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", agent_sock], stdout=subprocess.DEVNULL, env=c.env)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(agent_sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agent-test-key", "-f",
                        str(c.tmp / "id")], check=True)
        c.env["SSH_AUTH_SOCK"] = agent_sock
        assert subprocess.run(["ssh-add", str(c.tmp / "id")], env=c.env, capture_output=True).returncode == 0
        r = c.ssh("-A", host, "ssh-add -l")
        assert r.returncode == 0 and "agent-test-key" in r.stdout and "ED25519" in r.stdout, r.stdout + r.stderr
        r = c.ssh(host, "ssh-add -l")  # without -A: no agent
        assert r.returncode == 2, r.stdout + r.stderr
    finally:
        c.env.pop("SSH_AUTH_SOCK")
        agent.kill()
        agent.wait()

    # another user's environment is 404 on the ssh endpoints, exactly as one that does not exist
    hk = f"{server.url}/api/v1/environments/{name}/ssh/hostkey"
    answer = httpx.get(hk, headers={"Authorization": f"Bearer {bob}"})
    assert answer.status_code == 404, answer.text
    answer = httpx.get(hk, headers={"Authorization": f"Bearer {token}"})
    known = known_hosts.read_text().split()
    assert answer.status_code == 200 and answer.text.split()[:2] == known[1:3], answer.text
    r = c.flex("ssh", "--stdio", name, e={**c.env, "FLEX_TOKEN": bob})
    assert r.returncode == 3 and "not found" in r.stderr and "Traceback" not in r.stderr, r.stderr


def lost(session: subprocess.Popen[str]) -> None:
    """The runner was killed under ``session``: the client gets a clear line."""
    _, err = session.communicate(timeout=30)
    assert session.returncode == 255 and "runner" in err and "lost" in err and "Traceback" not in err, err


def back_and_remove(c: Client, name: str) -> None:
    """Once the runner is back, ssh works again; then --remove gives ~/.ssh/config back byte for byte."""
    deadline = time.monotonic() + 30
    while (r := c.ssh(f"{name}.flex", "echo", "back")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (r.returncode, r.stdout) == (0, "back\n"), r.stderr
    assert c.flex("config-ssh", "--remove").returncode == 0
    assert c.config.read_text() == BEFORE
