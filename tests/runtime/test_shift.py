"""userns/shift.py on the real kernel, as the user flextest is root of its own user namespace (the keeper's map):
a layer-like tree copied with the keep-id:uid=1000 map keeps every kind of entry, mode, time and xattr, and the
ids that live inside xattrs (file capabilities, ACLs) move with the owners."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, missing

USER = "flextest"
pytestmark = pytest.mark.userns

_SCRIPT = r"""
import json, os, stat, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from flex.runtime.userns.shift import copy_shifted
src, dst = Path(sys.argv[1]) / "src", Path(sys.argv[1]) / "dst"
(src / "etc").mkdir(parents=True)
(src / "etc" / "passwd").write_text("root\n")
(src / "home" / "dev").mkdir(parents=True)
os.chown(src / "home" / "dev", 1000, 1000)
(src / "bin").mkdir()
(src / "bin" / "su").write_text("su")
os.chmod(src / "bin" / "su", 0o4755)
(src / "bin" / "ping").write_text("ping")
caps = (0x02000000 | 1).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)  # v2 cap_net_raw+ep
os.setxattr(src / "bin" / "ping", "security.capability", caps)
os.link(src / "bin" / "su", src / "bin" / "su2")
os.symlink("../etc/passwd", src / "bin" / "link")
os.lchown(src / "bin" / "link", 33, 33)
os.mkfifo(src / "fifo")
os.mknod(src / "gone", stat.S_IFCHR | 0o600, 0)
(src / "opaque").mkdir()
os.setxattr(src / "opaque", "user.overlay.opaque", b"y")
(src / "acl").write_text("acl")
NO = 0xFFFFFFFF
acl = (2).to_bytes(4, "little") + b"".join(t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little")
        for t, p, i in ((1, 6, NO), (2, 6, 1000), (4, 4, NO), (0x10, 6, NO), (0x20, 4, NO)))
os.setxattr(src / "acl", "system.posix_acl_access", acl)
os.utime(src / "etc" / "passwd", ns=(1_000_000_000, 1_500_000_000_123))
uid = lambda i: i + 1 if i < 1000 else (0 if i == 1000 else i)
n = copy_shifted(src, dst, uid, uid)
def own(p): st = os.lstat(p); return [st.st_uid, st.st_gid]
out = {"n": n, "root": own(dst), "passwd": own(dst / "etc" / "passwd"), "dev": own(dst / "home" / "dev"),
       "link": own(dst / "bin" / "link"), "su_mode": oct(os.lstat(dst / "bin" / "su").st_mode & 0o7777),
       "hardlink": os.lstat(dst / "bin" / "su").st_ino == os.lstat(dst / "bin" / "su2").st_ino,
       "readlink": os.readlink(dst / "bin" / "link"), "fifo": stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode),
       "whiteout": [stat.S_ISCHR(os.lstat(dst / "gone").st_mode), os.lstat(dst / "gone").st_rdev],
       "opaque": os.getxattr(dst / "opaque", "user.overlay.opaque").decode(),
       "mtime": os.lstat(dst / "etc" / "passwd").st_mtime_ns,
       "caps": os.getxattr(dst / "bin" / "ping", "security.capability").hex(),
       "acl_user": int.from_bytes(os.getxattr(dst / "acl", "system.posix_acl_access")[16:20], "little")}
print(json.dumps(out))
"""


def test_copy_shifted_keeps_everything_and_moves_ids_inside_xattrs() -> None:
    try:
        sub = next(int(line.split(":")[1]) for line in Path("/etc/subuid").read_text().splitlines()
                   if line.split(":")[0] == USER)
    except (OSError, StopIteration):
        missing("test user flextest has no /etc/subuid range: run installer/install.sh --dev")
    work = Path(tempfile.mkdtemp(prefix="flex-shift-", dir="/var/tmp"))
    try:
        shutil.chown(work, USER, USER)
        argv = ["runuser", "-u", USER, "--", "unshare", "--map-root-user", f"--map-users={sub},1,65536",
                f"--map-groups={sub},1,65536", "--", "/usr/bin/python3", "-c", _SCRIPT, str(work), str(REPO)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    assert out["n"] == 13
    assert out["root"] == out["passwd"] == [1, 1]  # root's files: the container's root, keeper id 1
    assert out["dev"] == [0, 0]  # uid 1000's: the user, keeper id 0
    assert out["link"] == [34, 34] and out["readlink"] == "../etc/passwd"
    assert out["su_mode"] == "0o4755" and out["hardlink"] and out["fifo"] and out["whiteout"] == [True, 0]
    assert out["opaque"] == "y" and out["mtime"] == 1_500_000_000_123
    # a v3 capability whose root is keeper id 1 (the container's root); read here it says so
    assert out["caps"] == ((0x03000000 | 1).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
                           + (1).to_bytes(4, "little")).hex()
    assert out["acl_user"] == 0  # the ACL's entry for uid 1000 follows it to keeper id 0
