"""A root runner's secrets, as another local user sees them: the environment of a container (in the
runtime database, its config.json and exec specs) and its files must stay out of their reach."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.runtime.containers.conftest import Mode

pytestmark = pytest.mark.userns


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, cwd="/", timeout=60)


def test_another_user_reads_no_environment_and_no_container_files(mode: Mode, image_dir: str) -> None:
    # Before the fix, FLEX_HOME and containers/ were searchable by everyone and runtime.db, config.json
    # and exec specs were 0644: `cat` as nobody printed every container's variables.
    if mode.rootless:
        pytest.skip("a rootless FLEX_HOME is the user's own, 0700")
    secret = os.urandom(8).hex()
    cid = mode.ok("run", "-d", "-e", f"API_TOKEN={secret}", image_dir, "sleep", "300").strip()
    bundle = Path(json.loads(mode.ok("inspect", cid))["bundle"])
    execing = subprocess.Popen(mode.argv("exec", "-e", f"EXEC_TOKEN={secret}", cid, "sleep", "300"),
                               env=mode.env(), cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (specs := list(bundle.glob("exec-*.json"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert specs, "the exec spec is written while the exec runs"
        db = mode.home / "runtime.db"
        secret_files = [db, bundle / "config.json", *specs]
        assert any(secret.encode() in f.read_bytes() for f in (db, db.with_name("runtime.db-wal")) if f.exists())
        for f in secret_files[1:]:
            assert secret.encode() in f.read_bytes(), f
        for f in [*secret_files, db.with_name("runtime.db-wal"), db.with_name("runtime.db-shm")]:
            r = _as_nobody("cat", str(f))
            assert r.returncode != 0 and secret.encode() not in r.stdout, f"nobody read {f}"
        r = _as_nobody("grep", "-rl", secret, str(mode.home))
        assert r.returncode != 0 and not r.stdout, f"nobody found the secret in {r.stdout}"
        for probe in (["ls", str(bundle)], ["ls", str(bundle / "rootfs")], ["cat", str(bundle / "log")],
                      ["stat", str(bundle / "rootfs/etc/hostname")], ["ls", str(mode.home / "containers")]):
            assert _as_nobody(*probe).returncode != 0, f"nobody could {' '.join(probe)}"
        # ... while the container's own root still reaches its rootfs, and works
        assert mode.ok("exec", cid, "cat", "/etc/debian_version").strip()
    finally:
        execing.kill()
        execing.wait()


def test_a_flex_home_below_a_private_directory_is_refused_in_one_line(mode: Mode, image_dir: str) -> None:
    # Before the fix: crun's "make '.../rootfs' private: Permission denied", after the container was made.
    if mode.rootless:
        pytest.skip("rootless, the container's root is the user: a private parent is fine")
    parent = Path(tempfile.mkdtemp())  # 0700, as `mktemp -d` makes it
    home = parent / "home"
    try:
        r = Mode(name="root", home=home, python=mode.python).run("run", "--rm", image_dir, "true")
        lines = r.stderr.strip().splitlines()
        assert r.code == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("error: ") and f"{parent} is not searchable by other users" in lines[0]
        assert lines[1] == f"hint: chmod o+x {parent}, or use a FLEX_HOME whose parents others may search " \
                           "(default /var/lib/flex)"
        assert not [p for p in (home / "containers").iterdir()], "refused before anything is made"
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=False)
