"""An environment backup on the runner: workspace, inner Docker data and writable layer, across id ranges,
in a worker process with low CPU weight and I/O limits (issue 17, points 3 and 6)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from flex.runner.backups import CPU_SHARES, CPU_WEIGHT, environment_sources, run_worker
from flex.runtime.cgroups import cgroups
from tests.backup.conftest import PASSWORD, describe

OLD, NEW = 100000, 300000


def _environment(root: Path) -> dict[str, Path]:
    ws = root / "volumes" / "env1" / "web"
    ws.mkdir(parents=True)
    (ws / "app.py").write_text("print('hi')\n")
    upper = root / "snapshots" / "7" / "fs"
    (upper / "usr" / "bin").mkdir(parents=True)
    (upper / "usr" / "bin" / "htop").write_bytes(os.urandom(50_000))  # an apt-installed binary
    os.chmod(upper / "usr" / "bin" / "htop", 0o755)
    (upper / "etc" / "apt").mkdir(parents=True)
    os.mknod(upper / "etc" / "motd", stat.S_IFCHR | 0o000, 0)  # overlay whiteout: a deleted image file
    os.setxattr(upper / "etc" / "apt", "trusted.overlay.opaque", b"y")
    docker = root / "volumes" / "env1-docker"
    (docker / "image" / "overlay2").mkdir(parents=True)
    (docker / "image" / "overlay2" / "repositories.json").write_text('{"Repositories": {"alpine": {}}}')
    for p in (ws, upper, docker):
        for dirpath, dirs, files in os.walk(p):
            for n in [*dirs, *files]:
                os.lchown(os.path.join(dirpath, n), OLD, OLD)
            os.lchown(dirpath, OLD, OLD)
    os.lchown(ws / "app.py", OLD + 1000, OLD + 1000)  # the environment's user (uid 1000 inside)
    return environment_sources(root / "volumes" / "env1", docker=docker, upper=upper)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: owners in another id range and cgroups")
def test_environment_round_trip_onto_another_id_range_in_a_gentle_worker(tmp_path: Path) -> None:
    sources = _environment(tmp_path / "old")
    assert set(sources) == {"workspace", "docker", "upper"}
    pw = tmp_path / "backup.key"
    pw.write_bytes(PASSWORD)
    repo = str(tmp_path / "repo")
    reply = run_worker({"op": "backup", "repo": repo, "password_file": str(pw), "env_id": "env1",
                        "sources": {k: str(v) for k, v in sources.items()}, "id_offset": OLD})
    snap = reply["snapshot"]
    assert snap["tags"] == ["env:env1"] and reply["summary"]["files_new"] == 3

    # the worker ran in its own cgroup with a low CPU weight (and I/O limits where the disk allows)
    assert reply["cgroup"] and f"/{reply['cgroup']}" in reply["proc_cgroup"]
    assert reply["cpu"] == str(CPU_WEIGHT if cgroups.is_v2() else CPU_SHARES)
    st = os.stat(tmp_path)
    if Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").exists():  # on a disk, not tmpfs
        assert reply["devices"] and reply["io"].startswith(reply["devices"][0])
    assert not cgroups.cgroup_dirs(reply["cgroup"]), "the worker's cgroup goes with it"

    target = tmp_path / "new" / "restore"
    run_worker({"op": "restore", "repo": repo, "password_file": str(pw), "snapshot": snap["id"],
                "target": str(target), "id_offset": NEW})
    for name, src in sources.items():
        assert describe(target / name, uid_base=NEW) == describe(src, uid_base=OLD), name
    assert os.stat(target / "workspace" / "web" / "app.py").st_uid == NEW + 1000
    assert os.lstat(target / "upper" / "etc" / "motd").st_rdev == 0
    assert os.getxattr(target / "upper" / "etc" / "apt", "trusted.overlay.opaque") == b"y"


def test_worker_errors_come_back_as_their_kind(tmp_path: Path) -> None:
    from flex.errors import NotFound

    pw = tmp_path / "backup.key"
    pw.write_bytes(PASSWORD)
    with pytest.raises(NotFound, match="no backup repository"):
        run_worker({"op": "restore", "repo": str(tmp_path / "none"), "password_file": str(pw), "snapshot": "x",
                    "target": str(tmp_path / "t")})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlay mounts")
@pytest.mark.parametrize(("made", "there"), [("user", "trusted"), ("trusted", "user")])
def test_a_writable_layer_moved_between_a_root_and_a_rootless_overlay_keeps_deleted_directories_hidden(
        tmp_path: Path, made: str, there: str) -> None:
    """A directory of the image deleted and made again in the container is opaque in the writable layer: a
    rootless runner's overlay marks it ``user.overlay.opaque``, a root runner's ``trusted.overlay.opaque``. Restored
    on the other kind, the overlay there still hides the image's files in it."""
    lower, upper = tmp_path / "image", tmp_path / "upper"
    (lower / "etc" / "apt").mkdir(parents=True)
    (lower / "etc" / "apt" / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    (upper / "etc" / "apt").mkdir(parents=True)
    (upper / "etc" / "apt" / "mine.list").write_text("deb http://127.0.0.1/ ./\n")
    os.setxattr(upper / "etc" / "apt", f"{made}.overlay.opaque", b"y")
    pw = tmp_path / "backup.key"
    pw.write_bytes(PASSWORD)
    repo = str(tmp_path / "repo")
    snap = run_worker({"op": "backup", "repo": repo, "password_file": str(pw), "env_id": "env1",
                       "sources": {"upper": str(upper)}})["snapshot"]
    target = tmp_path / "restored"
    run_worker({"op": "restore", "repo": repo, "password_file": str(pw), "snapshot": snap["id"],
                "target": str(target), "overlay_xattrs": {"upper": there}})
    assert os.getxattr(target / "upper" / "etc" / "apt", f"{there}.overlay.opaque") == b"y"
    assert f"{made}.overlay.opaque" not in os.listxattr(target / "upper" / "etc" / "apt")
    merged, work = tmp_path / "merged", tmp_path / "work"
    merged.mkdir()
    work.mkdir()
    opts = f"lowerdir={lower},upperdir={target / 'upper'},workdir={work}" + (",userxattr" if there == "user" else "")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged / "etc" / "apt")) == ["mine.list"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
