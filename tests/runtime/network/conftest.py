"""A private lab for network tests: a fake "host" network namespace, an "upstream" one, and helpers.

Every test runs flex's network code inside ``lab.host`` (a namespace the test creates), never in the
machine's real one: the bridge, the nftables tables, the published ports on 127.0.0.1 all live there, and
the "outside world" is ``lab.upstream`` (10.250.0.2, plus a fake metadata server on 169.254.169.254),
reached through a veth pair. So nothing a test sends can leave the machine even if a rule is wrong, and
tests never touch the runner's real flex0 or firewall. Rootless runs use the user ``flextest``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ROOTLESS_PY = "/usr/bin/python3"


def _sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check, **kw)


class Lab:
    def __init__(self, rootless: bool):
        tag = secrets.token_hex(3)
        self.rootless = rootless
        self.host = f"flexlab-h{tag}"
        self.upstream = f"flexlab-u{tag}"
        self.home = Path(tempfile.mkdtemp(prefix="flexnet-"))
        self.home.chmod(0o755)
        self.procs: list[subprocess.Popen[str]] = []
        self.pids: set[int] = set()
        self.env: list[str] = []  # NAME=VALUE for every flex process the lab runs

    # --- set-up / tear-down ---
    def start(self) -> None:
        for ns in (self.host, self.upstream):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", self.host, "link", "add", "uplink", "type", "veth", "peer", "name", "downlink",
            "netns", self.upstream)
        _sh("ip", "-n", self.host, "addr", "add", "10.250.0.1/24", "dev", "uplink")
        _sh("ip", "-n", self.host, "link", "set", "uplink", "up")
        _sh("ip", "-n", self.upstream, "addr", "add", "10.250.0.2/24", "dev", "downlink")
        _sh("ip", "-n", self.upstream, "addr", "add", "169.254.169.254/32", "dev", "lo")
        _sh("ip", "-n", self.upstream, "link", "set", "downlink", "up")
        _sh("ip", "-n", self.host, "route", "add", "169.254.169.254/32", "via", "10.250.0.2")
        self.serve(self.upstream, "10.250.0.2", 80, "world")
        self.serve(self.upstream, "169.254.169.254", 80, "metadata")
        self.serve(self.host, "127.0.0.1", 7001, "host-loopback")
        self.serve(self.host, "0.0.0.0", 7002, "host-any")
        if self.rootless:
            uid = pwd.getpwnam("flextest").pw_uid
            os.chown(self.home, uid, uid)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.agent("gc", "1" if self.rootless else "0", check=False)
        for pid in self.pids | self._netns_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
            if p.stdout is not None:
                p.stdout.close()
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(self.home) + "/"):
                _sh("umount", "-l", target, check=False)
        for ns in (self.host, self.upstream):
            _sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def _netns_pids(self) -> set[int]:
        out: set[int] = set()
        for ns in (self.host, self.upstream):
            r = _sh("ip", "netns", "pids", ns, check=False)
            out |= {int(x) for x in r.stdout.split()}
        return out

    # --- running things ---
    def in_host(self, *cmd: str, as_user: bool = False) -> list[str]:
        """argv running ``cmd`` in the lab's host namespace (as flextest when ``as_user``)."""
        # nsenter, not `ip netns exec`: the latter runs in a private mount namespace, and the namespace
        # files flex bind-mounts there would vanish with it.
        prefix = ["nsenter", f"--net=/run/netns/{self.host}"]
        if as_user:
            prefix += ["runuser", "-u", "flextest", "--", "env", f"PYTHONPATH={REPO}", f"HOME={self.home}"]
        return [*prefix, "env", *self.env, *cmd]

    @property
    def python(self) -> str:
        return ROOTLESS_PY if self.rootless else sys.executable

    def serve(self, ns: str, host: str, port: int, name: str) -> None:
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", sys.executable, str(HERE / "probe.py"), "serve",
                              host, str(port), name], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def agent_argv(self, *args: str) -> list[str]:
        return self.in_host(self.python, str(HERE / "agent.py"), str(self.home), *args, as_user=self.rootless)

    def agent(self, *args: str, check: bool = True) -> dict[str, Any]:
        r = subprocess.run(self.agent_argv(*args), capture_output=True, text=True, timeout=120)
        if check:
            assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.splitlines()[-1]) if r.stdout.strip() else {}

    def up(self, cid: str, *publish: str, own_netns: bool = False) -> dict[str, Any]:
        info = self.agent("upown" if own_netns else "up", cid, "1" if self.rootless else "0", *publish)
        self.pids.add(int(info["pid"]))
        return info

    def release(self, cid: str) -> None:
        self.agent("release", cid, "1" if self.rootless else "0")

    def gc(self, *live: str) -> list[str]:
        released: list[str] = self.agent("gc", "1" if self.rootless else "0", *live)["released"]
        return released

    def in_container(self, info: dict[str, Any], *cmd: str) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in a container's network namespace with its root's powers there: rootless, in the
        container's own user namespace (full capabilities in it, as the container's root has); the same
        for a root runner's container that owns its network namespace."""
        if info.get("own"):
            argv = ["nsenter", f"--target={info['pid']}", "--user", "--net", "--preserve-credentials", *cmd]
        elif self.rootless:
            argv = self.in_host("nsenter", f"--target={info['pid']}", "--user", "--net", "--preserve-credentials",
                                *cmd, as_user=True)
        else:
            argv = ["nsenter", f"--net={info['netns']}", *cmd]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def from_container(self, info: dict[str, Any], *probe: str) -> dict[str, Any]:
        """Run probe.py inside a container's network namespace."""
        r = self.in_container(info, self.python, str(HERE / "probe.py"), *probe)
        assert r.stdout.strip(), r.stderr
        result: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
        return result

    def from_host(self, *probe: str) -> dict[str, Any]:
        """Run probe.py in the lab's host namespace (as root: a host-side client of published ports)."""
        r = subprocess.run(self.in_host(sys.executable, str(HERE / "probe.py"), *probe), capture_output=True,
                           text=True, timeout=60)
        result: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
        return result

    def links(self) -> list[str]:
        r = _sh("ip", "-n", self.host, "-j", "link", "show")
        return [str(link["ifname"]) for link in json.loads(r.stdout)]

    def nft_tables(self) -> list[str]:
        r = _sh(*self.in_host("nft", "list", "tables"))
        return [line.strip() for line in r.stdout.splitlines() if line.strip()]

    def helper_processes(self) -> list[str]:
        """Command lines of slirp4netns / forwarder processes started for this lab's FLEX_HOME."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                args = (entry / "cmdline").read_bytes().split(b"\0")
                text = b" ".join(args).decode(errors="replace")
                if str(self.home) in text and ("slirp4netns" in text or "net_forward" in text):
                    found.append(text)
        return found

    def leftovers(self) -> dict[str, Any]:
        """Everything flex could have left behind; all empty when the network code cleaned up."""
        run = self.home / "run"
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.home / "runtime.db")) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            leases = db.execute("SELECT * FROM net_leases").fetchall() if "net_leases" in tables else []
            endpoints = (db.execute("SELECT container_id FROM net_endpoints").fetchall()
                         if "net_endpoints" in tables else [])
        return {
            "netns files": sorted(p.name for p in (run / "netns").glob("*")) if (run / "netns").exists() else [],
            "container dirs": sorted(p.name for p in (run / "net").glob("*")) if (run / "net").exists() else [],
            "links": [n for n in self.links() if n.startswith(("fx", "flex"))],
            "nft tables": [t for t in self.nft_tables() if "flex" in t],
            "processes": self.helper_processes(),
            "leases": leases,
            "endpoints": endpoints,
        }


def _can_run_rootless() -> str | None:
    try:
        pwd.getpwnam("flextest")
    except KeyError:
        return "test user 'flextest' missing: run installer/install.sh --dev as root"
    if not Path(ROOTLESS_PY).exists() or shutil.which("slirp4netns") is None:
        return "needs /usr/bin/python3 and slirp4netns (installer/install.sh)"
    r = subprocess.run(["runuser", "-u", "flextest", "--", "env", f"PYTHONPATH={REPO}", ROOTLESS_PY, "-c",
                        "import flex.runtime.network.networks"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"flextest cannot import flex from {REPO} (is the checkout readable by other users?)"
    return None


@pytest.fixture(params=["root", "rootless"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        missing("the network lab creates namespaces: run the tests as root")
    if shutil.which("nft") is None:
        missing("nftables is not installed (installer/install.sh)")
    rootless = request.param == "rootless"
    if rootless and (reason := _can_run_rootless()):
        missing(reason)
    lab = Lab(rootless)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()
