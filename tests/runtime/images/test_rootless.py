"""Rootless: `flex image pull` as an ordinary user with a subuid range unpacks inside a user namespace,
so files carry the shifted ids on disk and appear with their in-image owners inside the namespace."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing

from .conftest import RegistryServer
from .test_pull import two_layer_image

__all__ = ["two_layer_image"]  # the fixture, imported for this module

pytestmark = [pytest.mark.registry, pytest.mark.userns,
              pytest.mark.skipif(os.geteuid() != 0, reason="runs as root to act as the user flextest")]

USER = "flextest"


def _subid(path: str) -> int:
    for line in Path(path).read_text().splitlines():
        name, start, _ = line.split(":")
        if name == USER:
            return int(start)
    missing(f"{USER} has no range in {path}")


@pytest.fixture
def user_home() -> Iterator[Path]:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        missing(f"test user {USER} missing: run installer/install.sh --dev")
    d = Path(tempfile.mkdtemp(prefix="flex-img-rootless-", dir="/var/tmp"))
    d.chmod(0o755)
    shutil.chown(d, USER, USER)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def as_user(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "FLEX_HOME": str(home / "flex"), "HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]),
                                          sysconfig.get_paths()["purelib"]])}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *args],
                          capture_output=True, text=True, cwd="/", timeout=300)


def _python(home: Path) -> str:
    """The venv's interpreter if the user may run it, else the system one of the same minor version
    (the venv's site-packages come through PYTHONPATH); on these VMs the venv's python lives in /root."""
    want = f"import sys, typer, httpx; sys.exit(sys.version_info[:2] != {tuple(sys.version_info[:2])!r})"
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if as_user(cand, "-c", want, home=home).returncode == 0:
            return cand
    missing(f"no python with flex's dependencies that {USER} may run")


def test_rootless_pull_shifts_ownership(user_home: Path, registry: RegistryServer,
                                        two_layer_image: tuple[Path, str]) -> None:
    _, repo = two_layer_image
    python = _python(user_home)
    res = as_user(python, "-m", "flex", "image", "pull", f"{repo}:1", home=user_home)
    assert res.returncode == 0, res.stderr
    assert "skipped device node 'dev/null'" in res.stderr  # mknod is not allowed without root
    info = json.loads(as_user(python, "-m", "flex", "image", "inspect", f"{repo}:1", "--json",
                              home=user_home).stdout)
    uid, sub_u = pwd.getpwnam(USER).pw_uid, _subid("/etc/subuid")
    assert info["ownership"].startswith(f"shifted:uid=0:{uid}:1,1:{sub_u}:")
    top, base = (Path(p) for p in info["lowerdirs"])
    st = os.lstat(base / "usr/share/doc/a.txt")
    assert (st.st_uid, st.st_gid) == (sub_u + 999, _subid("/etc/subgid") + 999)  # 1000 inside
    assert os.lstat(base / "etc/passwd").st_uid == uid  # 0 inside
    assert os.lstat(base / "usr/bin/su").st_mode & 0o7777 == 0o4755
    assert os.getxattr(base / "usr/share/doc/a.txt", "user.comment") == b"hello"
    # mounted as a container would be, inside the user's namespace: in-image owners, whiteouts honoured
    mnt = user_home / "mnt"
    mnt.mkdir()
    shutil.chown(mnt, USER, USER)
    script = (f"mount -t overlay overlay -o lowerdir={top}:{base},userxattr {mnt} && "
              f"stat -c %u:%g {mnt}/home/user/.profile {mnt}/usr/share/doc/b.txt && "
              f"test ! -e {mnt}/etc/shadow && test ! -e {mnt}/home/user/dir && cat {mnt}/opt/tool/new.txt")
    res = as_user("unshare", "--map-root-user", f"--map-users={sub_u},1,65535",
                  f"--map-groups={_subid('/etc/subgid')},1,65535", "--mount", "sh", "-c", script, home=user_home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1000:1000", "33:33", "new"]
