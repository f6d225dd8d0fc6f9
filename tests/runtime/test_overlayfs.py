"""An overlay of more layers than one mount(2) option page holds: through ``lowerdir+`` (Linux 6.8+)
and through short relative names (any kernel), each checked against what the merged tree shows."""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from flex.runtime.base.overlayfs import MAX_OPTIONS, mount_overlay, overlay_options

LAYERS = 100
_libc = ctypes.CDLL(None, use_errno=True)


def _layers(root: Path) -> list[Path]:
    """LAYERS lower dirs, top first, under a long path; layer i adds layers/<i> and overwrites top."""
    base = root / ("long-directory-name-" * 3) / "snapshots"
    out = []
    for i in range(LAYERS):
        d = base / str(i) / "fs"
        (d / "layers").mkdir(parents=True)
        (d / "layers" / f"{i:03d}").write_text(str(i))
        (d / "top").write_text(str(i))
        out.append(d)
    return out[::-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting an overlay outside a user namespace needs root")
@pytest.mark.parametrize("lowerdir_plus", [True, False], ids=["lowerdir+", "relative-names"])
def test_an_overlay_of_100_layers(tmp_path: Path, lowerdir_plus: bool) -> None:
    lowers = _layers(tmp_path)
    upper, work, target = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, target):
        d.mkdir()
    assert len(overlay_options(lowers, upper, work)) > MAX_OPTIONS, "the test must not fit one page"
    cwd = os.getcwd()
    mount_overlay(target, lowers, upper=upper, work=work, lowerdir_plus=lowerdir_plus)
    try:
        assert os.getcwd() == cwd
        assert sorted(os.listdir(target / "layers")) == [f"{i:03d}" for i in range(LAYERS)]
        assert (target / "top").read_text() == str(LAYERS - 1), "the first lower dir is the top layer"
        (target / "new").write_text("rw")
        assert (upper / "new").read_text() == "rw"
    finally:
        _libc.umount2(os.fsencode(target), 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting an overlay outside a user namespace needs root")
def test_a_read_only_overlay_of_100_layers(tmp_path: Path) -> None:
    lowers = _layers(tmp_path)
    target = tmp_path / "merged"
    target.mkdir()
    mount_overlay(target, lowers, options=("ro",))
    try:
        assert (target / "top").read_text() == str(LAYERS - 1)
        with pytest.raises(OSError, match="Read-only file system"):
            (target / "new").write_text("x")
    finally:
        _libc.umount2(os.fsencode(target), 2)


_IN_USERNS = """
import os, sys
from pathlib import Path
from flex.runtime.base.overlayfs import mount_overlay
root = Path(sys.argv[1])
lowers = sorted((p for p in root.glob("*/snapshots/*/fs")), key=lambda p: -int(p.parent.name))
for d in ("upper", "work", "merged"):
    (root / d).mkdir()
mount_overlay(root / "merged", lowers, upper=root / "upper", work=root / "work", options=("userxattr",),
              lowerdir_plus=sys.argv[2] == "1")
print(len(os.listdir(root / "merged" / "layers")), (root / "merged" / "top").read_text())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="acts as the unprivileged user flextest (runuser)")
@pytest.mark.parametrize("lowerdir_plus", [True, False], ids=["lowerdir+", "relative-names"])
def test_an_overlay_of_100_layers_in_a_user_namespace(lowerdir_plus: bool) -> None:
    """How a rootless runner mounts (unprivileged, userxattr), e.g. on a laptop older than Linux 6.8."""
    from tests.conftest import REPO
    from tests.runtime.containers.conftest import USER, _python_for_user

    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip("test user flextest missing: run installer/install.sh --dev as root")
    python = _python_for_user()
    root = Path(tempfile.mkdtemp(prefix="flex-overlayfs-", dir="/var/tmp"))
    try:
        _layers(root)
        subprocess.run(["chown", "-R", USER, str(root)], check=True)
        path = f"PYTHONPATH={REPO}:{sysconfig.get_paths()['purelib']}"
        proc = subprocess.run(["runuser", "-u", USER, "--", "env", path, "unshare", "-Urm", *python, "-c", _IN_USERNS,
                               str(root), "1" if lowerdir_plus else "0"],
                              capture_output=True, text=True, timeout=120, cwd="/")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [str(LAYERS), str(LAYERS - 1)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
