"""Fixtures for runner tests: a real `flex server` process, a real git server (`git daemon` on 127.0.0.1),
and real `flex runner run` processes, as root and as the user flextest (rootless), with real containers.

Images come from the runtime's container fixtures (made the way `flex image bootstrap` makes them, from the
cached Debian minbase tar) in the mode's FLEX_HOME, which the runner then uses as its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flex.api import Environment
from flex.client import FlexClient
from flex.errors import NotFound
from tests.conftest import missing, remove_later
from tests.controlplane.conftest import free_port
from tests.runtime.containers.conftest import (  # noqa: F401  (fixtures, re-exported for these tests)
    USER,
    Mode,
    cleanup,
    delegated,
    homes,
    image,
    image_for,
    images,
    mode,
    workdir,
)

_GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


@dataclass
class GitServer:
    base: Path
    port: int

    def repo(self, name: str, files: dict[str, str], *, branch: str = "main") -> str:
        """A bare repository ``name``.git with one commit of ``files``; returns its git:// URL."""
        work = Path(tempfile.mkdtemp(prefix="src-", dir=self.base.parent))
        for rel, text in files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        env = {**os.environ, **_GIT_ENV}
        for args in (["init", "-q", "-b", branch], ["add", "-A"], ["commit", "-q", "-m", "init"]):
            subprocess.run(["git", *args], cwd=work, env=env, check=True)
        bare = self.base / f"{name}.git"
        shutil.rmtree(bare, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=env, check=True)
        shutil.rmtree(work)
        return f"git://127.0.0.1:{self.port}/{name}.git"


@pytest.fixture(scope="session")
def git_server(workdir: Path) -> Iterator[GitServer]:  # noqa: F811
    if shutil.which("git") is None:
        missing("git is not installed (installer/install.sh)")
    base = workdir / "git"
    base.mkdir(exist_ok=True)
    port = free_port()
    with open(workdir / "git-daemon.log", "w") as log:
        proc = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                                 f"--port={port}", "--reuseaddr", "--informative-errors", str(base)],
                                stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    import socket
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"git daemon did not start: {(workdir / 'git-daemon.log').read_text()}") from None
            time.sleep(0.05)
    try:
        yield GitServer(base, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    admin: FlexClient
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    def join_token(self, grant: dict[str, Any] | None = None) -> str:
        return self.admin.create_join_token(grant).token

    def kill_and_restart(self) -> None:
        """kill -9 of the server, then the same server again (same home, port and options)."""
        self.proc.kill()
        self.proc.wait(30)
        assert self.log is not None
        self.proc = _spawn_server(self.argv, self.env, self.log, self.url)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with start_server(tmp_path) as srv:
        yield srv


def _spawn_server(argv: list[str], env: dict[str, str], log_path: Path, url: str) -> subprocess.Popen[str]:
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, text=True)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"flex server exited: {log_path.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("flex server did not become ready")
        time.sleep(0.1)


@contextlib.contextmanager
def start_server(tmp_path: Path, *extra: str, heartbeat_timeout: float = 60) -> Iterator[Server]:
    """A real `flex server` (FLEX_HOME tmp_path/server-home), with more of its options in ``extra``."""
    home = tmp_path / "server-home"
    port = free_port()
    env = {**os.environ, "FLEX_HOME": str(home)}
    argv = [sys.executable, "-m", "flex", "server", "--listen", f"127.0.0.1:{port}", "--heartbeat-timeout",
            str(heartbeat_timeout), *extra]
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "server.log").write_text("")
    proc = _spawn_server(argv, env, tmp_path / "server.log", url)
    token = (home / "server" / "admin-token").read_text().strip()
    with FlexClient(url, token) as admin:
        srv = Server(url, proc, admin, argv, env, tmp_path / "server.log")
        try:
            yield srv
        finally:
            srv.proc.send_signal(signal.SIGINT)
            try:
                srv.proc.wait(30)
            except subprocess.TimeoutExpired:
                srv.proc.kill()


@dataclass
class Runner:
    """`flex runner ...` as the mode's user, in the mode's FLEX_HOME."""

    mode: Mode
    log: Path
    proc: subprocess.Popen[str] | None = None
    logs: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.mode.python_argv("-m", "flex", *args), env=self.mode.env(), capture_output=True,
                              text=True, timeout=timeout, cwd="/")

    def join(self, server: Server, *extra: str) -> str:
        """Join with a token whose grant allows what the runner will declare, as an admin would make it: the
        labels given, and an owner for a desktop runner (the default kind when rootless)."""
        labels = dict(extra[i + 1].split("=", 1) for i, a in enumerate(extra) if a == "--label")
        desktop = "desktop" in extra or (self.mode.name == "rootless" and "vm" not in extra)
        grant: dict[str, Any] = {"labels": labels}
        if desktop:
            grant["owner"] = server.admin.whoami().name
        r = self.cli("runner", "join", server.url, "--token", server.join_token(grant), "--name", "r1", *extra)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def start(self, crash_after: str | None = None, *extra: str, env: dict[str, str] | None = None) -> None:
        """``crash_after``: the runner kills itself (SIGKILL) right after that reconcile step; ``extra``: more
        `flex runner run` options; ``env``: more variables in its environment."""
        assert self.proc is None or self.proc.poll() is not None
        argv = self.mode.python_argv("-m", "flex", "runner", "run", "--resync", "5", "--heartbeat", "2", *extra)
        more = {**(env or {}), **({"FLEX_RUNNER_CRASH_AFTER": crash_after} if crash_after is not None else {})}
        if more:
            at = argv.index("env") + 1 if "env" in argv else 0
            argv[at:at] = [*([] if at else ["env"]), *(f"{k}={v}" for k, v in more.items())]
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(argv, env=self.mode.env(), stdout=out, stderr=out, text=True, cwd="/")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            if self.mode.rootless:
                # the signal goes to the runner itself, not runuser (which re-raises a signal it forwarded)
                for pid in _children(self.proc.pid):  # (env execs python: runuser's child is the runner)
                    os.kill(pid, sig)
            else:
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the runner did not stop on {signal.Signals(sig).name}:\n{self.text()}") from None

    def wait_reconciled(self, env_id: str, after: float, timeout: float = 60) -> None:
        """Until `flex runner status` says ``env_id`` was reconciled after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.cli("runner", "status", "--json")
            if r.returncode == 0:
                envs = json.loads(r.stdout).get("environments") or {}
                if (envs.get(env_id) or {}).get("lastReconcile", 0) > after:
                    return
            time.sleep(0.5)
        raise AssertionError(f"{env_id} was not reconciled after {after}:\n{self.text()[-4000:]}")

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def runtime(self, *args: str) -> str:
        return self.mode.ok(*args)

    def containers(self, env_id: str) -> list[dict[str, Any]]:
        out = self.mode.ok("ps", "-a", "--json", "--filter", f"label=flex.dev/environment={env_id}")
        return json.loads(out)  # type: ignore[no-any-return]

    def exec(self, cid: str, script: str) -> str:
        return self.mode.ok("exec", cid, "sh", "-c", script)


def _children(pid: int) -> list[int]:
    """The direct children of ``pid``: a kill -9 of the runner is of the runner alone."""
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


@pytest.fixture
def runner(mode: Mode, tmp_path: Path) -> Iterator[Runner]:  # noqa: F811
    shutil.rmtree(mode.home / "runner", ignore_errors=True)
    r = Runner(mode, tmp_path / "runner.log")
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.stop()
        unmount_disk_images(mode.home)
        remove_later(mode.home / "runner")


def unmount_disk_images(home: Path) -> None:
    """What a failed test's environments left of their disk images (root runners): mounts, loop devices."""
    volumes = str(home / "runner" / "volumes") + "/"
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if point.startswith(volumes):
            subprocess.run(["umount", "--lazy", point], capture_output=True)
    for img in (home / "runner" / "disks").glob("*.img"):
        out = subprocess.run(["losetup", "-j", str(img), "-n", "-O", "NAME"], capture_output=True, text=True)
        for dev in out.stdout.split():
            subprocess.run(["losetup", "-d", dev], capture_output=True)


def remove_runner(r: Runner) -> None:
    """A test's second runner and its FLEX_HOME gone with all it left: the process, its environments' disk images
    (an environment left on it keeps its image mounted), containers and files."""
    if r.proc is not None and r.proc.poll() is None:
        r.stop()
    unmount_disk_images(r.mode.home)
    cleanup(r.mode)
    shutil.rmtree(r.mode.home, ignore_errors=True)


def wait_for(admin: FlexClient, name: str, pred: Callable[[Environment], bool], runner: Runner,
             timeout: float = 180) -> Environment:
    deadline = time.monotonic() + timeout
    env = None
    while time.monotonic() < deadline:
        env = admin.get_environment(name)
        if pred(env):
            return env
        time.sleep(0.2)
    # the status last: where a cut-off tail of the output still shows it
    raise AssertionError(f"environment {name} never got there\nrunner log:\n{runner.text()[-6000:]}\n"
                         f"environment {name}'s status: {env.status.to_wire() if env else None}")


def crashed(runner: Runner, step: str = "", timeout: float = 240) -> None:
    """The runner ended by its own kill -9 (``Runner.start(crash_after=step)``), not any other way."""
    assert runner.proc is not None
    code = runner.proc.wait(timeout)
    assert code in (-9, 137), f"the runner exited with {code}, not by its kill -9{' after ' + step if step else ''}:" \
                              f"\n{runner.text()[-3000:]}"


def wait_gone(admin: FlexClient, name: str, runner: Runner, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.get_environment(name)
        except NotFound:
            return
        time.sleep(0.2)
    raise AssertionError(f"environment {name} was never torn down\nrunner log:\n{runner.text()[-6000:]}")


def cond(env: Environment, type_: str) -> tuple[str, str] | None:
    c = env.status.condition(type_)
    return (c.status, c.reason) if c else None


def devcontainer(image_ref: str, **props: Any) -> dict[str, str]:
    return {".devcontainer/devcontainer.json": json.dumps({"image": image_ref, **props}, indent=2),
            "README.md": "hello from the repository\n"}
