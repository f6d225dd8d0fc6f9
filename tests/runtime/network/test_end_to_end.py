"""End to end: two real containers started by `flex runtime run -d -p ...`, the isolation matrix, `rm`.

As root and as flextest; the whole CLI runs inside the lab's host namespace (conftest.py), so the bridge,
rules and published ports are the lab's, never the machine's. The containers run a Perl TCP server and UDP echo
(Debian minbase ships perl-base). Skipped until the containers code (`flex runtime run`) is in the tree.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, debian_rootfs_tar, missing

pytestmark = [pytest.mark.userns, pytest.mark.slow]

# A client for `flex runtime exec`: prints "OK <reply>" or "FAIL <error>".
CLIENT = ('$c=IO::Socket::INET->new(PeerAddr=>$ARGV[0],PeerPort=>$ARGV[1],Timeout=>3);'
          'if(!$c){print "FAIL $!\\n"; exit 0} $r=<$c>; print "OK $r\\n"')
# A TCP server on 8000 and, in a forked child, a UDP echo on 9000 (answers "echo NAME <datagram>").
SERVER = ('$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>8000,Listen=>5,ReuseAddr=>1) or die "bind $!";'
          '$u=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>9000,Proto=>"udp") or die "udp $!";'
          'if(!fork){while(defined($u->recv($d,65535))){$u->send("echo NAME $d")} exit}'
          'while($c=$s->accept){print $c "hello NAME from ".$c->peerhost; close $c}')


def _image(rootless: bool) -> Path:
    """The cached Debian minbase as a root filesystem directory; rootless, shifted into flextest's subuid
    range by extracting it inside a user namespace (as the containers tests do)."""
    tar = debian_rootfs_tar()
    d = Path(tempfile.mkdtemp(prefix="flexnet-img-"))
    d.chmod(0o755)
    (d / "rootfs").mkdir()
    if not rootless:
        subprocess.run(["tar", "-C", str(d / "rootfs"), "--exclude=./dev/*", "-xf", str(tar)], check=True)
        return d
    subprocess.run(["chown", "-R", "flextest", str(d)], check=True)
    start = next(int(line.split(":")[1]) for line in Path("/etc/subuid").read_text().splitlines()
                 if line.startswith("flextest:"))
    subprocess.run(["runuser", "-u", "flextest", "--", "unshare", "--map-root-user", f"--map-users={start},1,65536",
                    f"--map-groups={start},1,65536", "tar", "-C", str(d / "rootfs"), "--exclude=./dev/*", "-xf",
                    str(tar)], check=True, cwd="/")
    return d


def test_flex_runtime_run_publishes_and_isolates_two_containers(lab) -> None:
    if shutil.which("crun") is None:
        missing("crun is not installed (installer/install.sh)")
    image = _image(lab.rootless)
    pythonpath = f"{REPO}:{sysconfig.get_paths()['purelib']}"

    def flex(*args: str) -> subprocess.CompletedProcess[str]:
        argv = lab.in_host("env", f"FLEX_HOME={lab.home}", f"PYTHONPATH={pythonpath}", lab.python, "-m", "flex",
                           "runtime", *args, as_user=lab.rootless)
        return subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd="/")

    names = ("web-a", "web-b")
    try:
        ports: dict[str, int] = {}
        udp_ports: dict[str, int] = {}
        ctr: dict[str, dict[str, Any]] = {}
        for name in names:
            r = flex("run", "-d", "--name", name, "-p", "0:8000", "-p", "0:9000/udp", str(image), "perl",
                     "-MIO::Socket::INET", "-e", SERVER.replace("NAME", name))
            assert r.returncode == 0, r.stderr
            r = flex("port", name)
            assert r.returncode == 0, r.stderr
            m = re.search(r"8000/tcp -> 127\.0\.0\.1:(\d+)", r.stdout)
            assert m, r.stdout
            ports[name] = int(m.group(1))
            m = re.search(r"9000/udp -> 127\.0\.0\.1:(\d+)", r.stdout)
            assert m, r.stdout
            udp_ports[name] = int(m.group(1))
        # Each container's network namespace, found by the hostname file flex wrote for it.
        for hostname_file in (lab.home / "run" / "net").glob("*/hostname"):
            name = hostname_file.read_text().strip()
            cid = hostname_file.parent.name
            hosts = (hostname_file.parent / "hosts").read_text()
            address = re.search(rf"^(\S+)\t{name}$", hosts, re.M)
            assert address, hosts
            ctr[name] = {"netns": str(lab.home / "run" / "netns" / cid), "address": address.group(1)}
        assert set(ctr) == set(names)
        if lab.rootless:
            # Rootless, the probes run inside the containers through `flex runtime exec` (nsenter cannot join
            # the user namespace crun made for them from outside).
            def probe(info: dict[str, Any], kind: str, host: str, port: str = "") -> dict[str, Any]:
                assert kind == "tcp"
                r = flex("exec", info["name"], "perl", "-MIO::Socket::INET", "-e", CLIENT, host, port)
                assert r.returncode == 0 and r.stdout.startswith(("OK", "FAIL")), r.stdout + r.stderr
                return {"ok": r.stdout.startswith("OK"), "reply": r.stdout[3:].strip(), "error": r.stdout}
        else:
            probe = lab.from_container
        for name, info in ctr.items():
            info["name"] = name
        a, b = ctr["web-a"], ctr["web-b"]
        gateway = "10.0.2.2" if lab.rootless else a["address"].rsplit(".", 1)[0] + ".1"

        for name in names:  # published on the host's loopback
            # `run -d` returns once the container has started, not once Perl listens: until then the
            # connection is closed at once (no reply). A timeout is not retried: that is a lost packet.
            deadline = time.monotonic() + 30
            while (r := lab.from_host("tcp", "127.0.0.1", str(ports[name])))["ok"] and not r["reply"] and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
            assert r["ok"] and r["reply"] == f"hello {name} from {gateway}", r
            r = lab.from_host("udp", "127.0.0.1", str(udp_ports[name]))
            assert r["ok"] and r["reply"] == f"echo {name} ping", r
        for src in (a, b):
            r = probe(src, "tcp", "10.250.0.2", "80")
            assert r["ok"] and r["reply"] == "hello world from 10.250.0.1", r
        if lab.rootless:
            assert not probe(a, "tcp", "10.0.2.2", str(ports["web-b"]))["ok"]
            assert not probe(b, "tcp", "10.0.2.2", str(ports["web-a"]))["ok"]
        else:
            for src, dst in ((a, b), (b, a)):
                assert not probe(src, "tcp", dst["address"], "8000")["ok"]
                assert not probe(src, "icmp", dst["address"])["ok"]
            assert not probe(a, "icmp", gateway)["ok"]
        for target in (("tcp", gateway, "7002"), ("tcp", "10.250.0.1", "7002"), ("tcp", gateway, "7001"),
                      ("tcp", "169.254.169.254", "80")):
            assert not probe(a, *target)["ok"], target

        for name in names:
            r = flex("rm", "-f", name)
            assert r.returncode == 0, r.stderr
            assert not lab.from_host("tcp", "127.0.0.1", str(ports[name]))["ok"]
            assert not lab.from_host("udp", "127.0.0.1", str(udp_ports[name]))["ok"]
        assert flex("gc").returncode == 0  # the bridge and its rules stay until gc finds them idle
        left = lab.leftovers()
        assert left == {"netns files": [], "container dirs": [], "links": [], "nft tables": [], "processes": [],
                        "leases": [], "endpoints": []}, left
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                flex("rm", "-f", name)
        shutil.rmtree(image, ignore_errors=True)
