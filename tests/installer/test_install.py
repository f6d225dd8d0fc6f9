"""The installer as an operator runs it, on this machine (systemd is not PID 1 here: flex's supervisor path),
into temporary places (FLEX_PREFIX, FLEX_BIN, FLEX_ETC, FLEX_STATE, FLEX_LOG, FLEX_RUN):

a control plane on PostgreSQL and two runners (separate FLEX_HOMEs and services) from the checkout; an environment
created through the API runs; a new version, released by installer/release.sh, is installed from its tarball
while it runs; then --uninstall keeps only the data and --uninstall --purge removes that too."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flex.client import FlexClient
from tests.conftest import debian_rootfs_tar
from tests.controlplane.conftest import Postgres, free_port, postgres  # noqa: F401  (fixture)
from tests.runner.conftest import GitServer, cond, devcontainer, git_server  # noqa: F401  (fixture)
from tests.runtime.containers.conftest import Mode, image_from_tar, workdir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "installer" / "install.sh"

pytestmark = [pytest.mark.userns, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1500)]


class Machine:
    """The temporary places one installation lives in, and the installer run with them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        names = {"FLEX_PREFIX": "prefix", "FLEX_BIN": "bin", "FLEX_ETC": "etc", "FLEX_STATE": "state",
                 "FLEX_LOG": "log", "FLEX_RUN": "run"}
        self.paths = {k: root / v for k, v in names.items()}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FLEX_", "VIRTUAL_ENV", "PYTHON"))}
        self.env = {**base, **{k: str(v) for k, v in self.paths.items()}, "FLEX_INIT": "supervisor"}

    def install(self, *args: str, installer: Path = INSTALL, check: bool = True,
                **env: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["bash", str(installer), *args], env={**self.env, **env}, capture_output=True, text=True,
                           timeout=1200, cwd="/")
        assert not check or r.returncode == 0, r.stderr[-6000:]
        return r

    def flex(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.paths["FLEX_BIN"] / "flex"), *args], env={**self.env, **env},
                              capture_output=True, text=True, timeout=120, cwd="/")

    def service(self, name: str) -> dict[str, object]:
        r = self.flex("service", "status", name, "--json")
        return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    root = Path(tempfile.mkdtemp(prefix="flex-install-", dir="/var/tmp"))
    root.chmod(0o755)  # flextest must reach FLEX_BIN and FLEX_PREFIX, as it reaches /usr/local/bin and /opt
    m = Machine(root)
    person = Path("~flextest").expanduser() / ".local" / "share" / "flex"  # the desktop daemon's FLEX_HOME
    had = person.exists()
    yield m
    if (m.paths["FLEX_PREFIX"] / "venv").exists():
        m.install("--uninstall", "--purge", check=False)
    shutil.rmtree(root, ignore_errors=True)
    if not had:
        shutil.rmtree(person, ignore_errors=True)


def _wait(what: str, pred: object, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"never: {what}")


def _uid(pid: object) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def _alive(pid: object) -> bool:
    try:
        return isinstance(pid, int) and Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _release(tmp: Path, version: str) -> Path:
    """A copy of the checkout at ``version``, released with installer/release.sh; its tarball unpacked."""
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        rel = f.decode()
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    for rel, pattern in (("pyproject.toml", r'^version = ".*"$'), ("flex/__init__.py", r'^__version__ = ".*"$')):
        text = (src / rel).read_text()
        key = pattern.split(" ")[0].lstrip("^")
        (src / rel).write_text(re.sub(pattern, f'{key} = "{version}"', text, count=1, flags=re.M))
    out = subprocess.run(["bash", str(src / "installer" / "release.sh"), str(tmp / "dist")], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    tarball = tmp / "dist" / f"flex-{version}.tar.gz"
    assert tarball.exists() and (tmp / "dist" / f"flex-{version}-py3-none-any.whl").exists()
    with tarfile.open(tarball) as t:
        t.extractall(tmp / "unpacked", filter="data")
    return tmp / "unpacked" / f"flex-{version}" / "installer" / "install.sh"


def test_server_two_runners_an_environment_upgrade_and_uninstall(
        machine: Machine, postgres: Postgres, git_server: GitServer, tmp_path: Path) -> None:  # noqa: F811
    m = machine
    port = free_port()
    with postgres.database() as db:
        # 1. the control plane, from the checkout
        r = m.install("--server", "--db", db, "--listen", f"127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}"
        token_file = m.paths["FLEX_STATE"] / "server" / "admin-token"
        assert f"control plane ready at {url}" in r.stderr
        assert f"admin token: {token_file}" in r.stderr
        join_line = next(line.strip() for line in r.stderr.splitlines() if "--runner" in line and "--token" in line)
        assert join_line.startswith(f"sudo {INSTALL} --runner {url} --token flexj_")
        # the control plane runs as the system user flex (no login shell), owner of the state; its settings
        # (a database password) are root's, readable by that user alone
        flex_user = pwd.getpwnam("flex")
        assert flex_user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
        st = m.paths["FLEX_STATE"].stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, flex_user.pw_uid)
        assert token_file.stat().st_uid == flex_user.pw_uid
        conf = m.paths["FLEX_ETC"] / "server.toml"
        st = conf.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, flex_user.pw_gid)
        assert f'db_url = "{db}"' in conf.read_text()
        assert _uid(m.service("flex-server")["main"]) == flex_user.pw_uid
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        # every user can run the flex on PATH (the system's Python, outside any home directory)
        who = subprocess.run(["runuser", "-u", "flextest", "--", str(m.paths["FLEX_BIN"] / "flex"), "--version"],
                             capture_output=True, text=True, cwd="/")
        assert who.returncode == 0 and who.stdout.strip() == "flex 0.1.0", who.stderr
        admin = FlexClient(url, token_file.read_text().strip())

        # 2. two runners, each its own FLEX_HOME and service; the first one's image store gets the test image
        homes = {n: m.root / f"home-{n}" for n in ("r1", "r2")}
        # each store already holds the base image the installer would otherwise make with mmdebstrap (minutes
        # under load), as the cached test rootfs: the installer sees it and skips `flex image bootstrap`
        for home in homes.values():
            home.mkdir()
            image = image_from_tar(Mode("root", home, [sys.executable]), debian_rootfs_tar(),
                                   "flex.local/debian:bookworm")
        t1 = admin.create_join_token({"labels": {"pool": "a"}}).token
        m.install("--runner", url, "--token", t1, "--name", "r1", "--label", "pool=a",
                  FLEX_HOME=str(homes["r1"]), FLEX_RUNNER_SERVICE="flex-runner-1")
        t2 = join_line.rsplit(" ", 1)[1]  # the exact command the server install printed
        m.install("--runner", url, "--token", t2, "--name", "r2", FLEX_HOME=str(homes["r2"]),
                  FLEX_RUNNER_SERVICE="flex-runner-2")
        _wait("both runners online", lambda: sorted(x.name for x in admin.list_runners().items
                                                     if x.state == "ready") == ["r1", "r2"])

        # a desktop person on the same machine, whose daemon runs from boot (--linger; no systemd here: a
        # supervised service run as that person); what a reboot must redo is in the boot script, which is safe to
        # run again (host fixes, the users' cgroup delegation, the supervisor's services)
        r = m.install("--desktop", "--user", "flextest", "--linger")
        assert "desktop ready for flextest" in r.stderr and "next, as flextest: flex up PATH" in r.stderr
        assert (m.paths["FLEX_ETC"] / "users").read_text().split() == ["flextest"]
        daemon = m.service("flex-daemon-flextest")
        assert _uid(daemon["main"]) == pwd.getpwnam("flextest").pw_uid, "the daemon runs as its person, not root"
        # `flex up` as that person (a clean login environment) finds the daemon running
        def person_daemon() -> dict[str, object]:
            home = Path("~flextest").expanduser()
            r = subprocess.run(["runuser", "-u", "flextest", "--", "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin",
                                str(m.paths["FLEX_BIN"] / "flex"), "daemon", "status", "--json"],
                               capture_output=True, text=True, timeout=60, cwd="/")
            return json.loads(r.stdout) if r.returncode == 0 else {}  # type: ignore[no-any-return]

        _wait("the person's daemon answers", lambda: person_daemon().get("pid") == daemon["main"], timeout=120)
        boot = subprocess.run([str(m.paths["FLEX_PREFIX"] / "libexec" / "flex-boot")], capture_output=True,
                              text=True, timeout=300, env=m.env)
        assert boot.returncode == 0, boot.stderr
        assert m.service("flex-runner-1")["state"] == "running"

        # 3. an environment through the API
        src = git_server.repo("app", devcontainer(image))
        admin.create_environment("web", {"source": {"git": src}, "runnerSelector": {"pool": "a"},
                                         "resources": {"cpus": 0.5, "memory": "512Mi", "disk": "1Gi"}})

        def running() -> bool:
            e = admin.get_environment("web")
            return e.status.phase == "running" and cond(e, "Ready") == ("True", "Ready")

        _wait("web running", running, timeout=300)
        ps = subprocess.run([str(m.paths["FLEX_BIN"] / "flex"), "runtime", "ps", "--json"], capture_output=True,
                            text=True, env={**m.env, "FLEX_HOME": str(homes["r1"])}, check=True)
        (ctr,) = json.loads(ps.stdout)

        # 4. a runner killed with -9 comes back; its environment never stopped
        before = m.service("flex-runner-1")["main"]
        os.kill(int(before), signal.SIGKILL)  # type: ignore[call-overload]
        _wait("runner restarted", lambda: _alive(m.service("flex-runner-1")["main"])
              and m.service("flex-runner-1")["main"] != before, timeout=60)

        # 5. upgrade: a new version, installed from its release tarball while the environment runs
        server_pid = m.service("flex-server")["main"]
        new = _release(tmp_path, "0.1.1")
        # as an older version left it: everything root's (the new version fixes that)
        server_dir = m.paths["FLEX_STATE"] / "server"
        for p in (m.paths["FLEX_STATE"], server_dir, *server_dir.iterdir()):
            os.chown(p, 0, 0)
        os.chown(conf, 0, 0)
        conf.chmod(0o600)
        r = m.install(installer=new)
        upgraded = time.time()  # the runners restarted before the installer returned
        assert "service flex-server restarted on flex 0.1.1" in r.stderr
        assert m.flex("--version").stdout.strip() == "flex 0.1.1"
        assert m.service("flex-server")["main"] != server_pid
        assert _uid(m.service("flex-server")["main"]) == flex_user.pw_uid
        assert all(p.stat().st_uid == flex_user.pw_uid for p in (m.paths["FLEX_STATE"], token_file))
        assert (conf.stat().st_gid, conf.stat().st_mode & 0o777) == (flex_user.pw_gid, 0o640)
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        def heartbeat_since(home: Path, t: float) -> bool:
            r = m.flex("runner", "status", "--json", FLEX_HOME=str(home))
            st = json.loads(r.stdout) if r.returncode == 0 else {}
            return bool(st.get("running")) and (st.get("lastHeartbeat") or 0) > t

        _wait("both runners heartbeat on the new version", lambda: all(heartbeat_since(h, upgraded)
                                                                         for h in homes.values()), timeout=120)
        after = json.loads(subprocess.run([str(m.paths["FLEX_BIN"] / "flex"), "runtime", "ps", "--json"],
                                          capture_output=True, text=True, check=True,
                                          env={**m.env, "FLEX_HOME": str(homes["r1"])}).stdout)
        assert [(c["id"], c["pid"], c["state"]) for c in after] == [(ctr["id"], ctr["pid"], "running")], \
            "the environment's container ran through the runner's kill -9 and the upgrade"
        assert admin.get_environment("web").status.phase == "running"  # the old version's data, read by the new

        # 6. uninstall: services and programs go, data stays
        admin.delete_environment("web")

        def gone() -> bool:
            return not [e for e in admin.list_environments().items if e.metadata.name == "web"]

        _wait("web deleted", gone, timeout=180)
        admin.close()
        services = ("flex-server", "flex-runner-1", "flex-runner-2", "flex-daemon-flextest")
        pids = [m.service(n)["supervisor"] for n in services] + [m.service(n)["main"] for n in services]
        r = m.install("--uninstall", installer=new)
        assert not any(_alive(p) for p in pids), "no flex process is left"
        assert not m.paths["FLEX_PREFIX"].exists() and not (m.paths["FLEX_BIN"] / "flex").exists()
        assert not (m.paths["FLEX_ETC"] / "services").exists()
        for kept in (m.paths["FLEX_STATE"] / "server" / "admin-token", conf, homes["r1"] / "runner",
                     homes["r2"] / "runner", m.paths["FLEX_LOG"] / "flex-server.log"):
            assert kept.exists(), f"{kept} is data and must stay"
        with socket.socket() as s:  # nothing listens any more (REUSEADDR: closed connections may linger)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()

        # 7. --purge says what it removes, then removes it
        r = m.install("--uninstall", "--purge", installer=new)
        line = next(x for x in r.stderr.splitlines() if "purging" in x)
        for p in (m.paths["FLEX_STATE"], homes["r1"], homes["r2"], m.paths["FLEX_ETC"], m.paths["FLEX_LOG"]):
            assert str(p) in line and not p.exists()
        assert "the system user flex" in line
        with pytest.raises(KeyError):
            pwd.getpwnam("flex")


def test_bad_input_and_bad_machines_are_one_line_and_change_nothing(machine: Machine) -> None:
    m = machine
    before = sorted(p.name for p in m.root.iterdir())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        cases = [
            (["--purge"], 2, "--purge goes with --uninstall"),
            (["--linger"], 2, "--linger goes with --desktop"),
            (["--server", "--listen", "nowhere"], 2, "--listen 'nowhere' is not HOST:PORT"),
            (["--server", "--tls-cert", "/nonexistent"], 2, "--tls-cert and --tls-key go together"),
            (["--runner", "ftp://x", "--token", "t"], 2, "is not an http(s) URL"),
            (["--runner", "http://127.0.0.1:9"], 2, "--runner needs --token"),
            (["--runner", "http://127.0.0.1:9", "--token", "t", "--label", "nolabel"], 2, "expected KEY=VALUE"),
            (["--server", "--listen", f"127.0.0.1:{taken}"], 1, f"cannot listen on 127.0.0.1:{taken}"),
            (["--runner", f"http://127.0.0.1:{free_port()}", "--token", "t"], 1, "cannot reach the control plane"),
        ]
        for args, code, want in cases:
            r = m.install(*args, check=False)
            errors = [x for x in r.stderr.splitlines() if "error" in x]
            assert r.returncode == code and len(errors) == 1 and want in errors[0], (args, r.stderr)
    assert sorted(p.name for p in m.root.iterdir()) == before, "a refused install changes nothing"
