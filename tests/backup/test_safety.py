"""Safety: kill -9 during backup, prune and restore; a flipped byte; hostile backups (issue 17, point 7)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flex.backup import LocalStore, Repository, Snapshot, backup, check, lock, restore
from flex.backup.pack import BLOB_DATA
from flex.errors import FailedPrecondition
from tests.backup.conftest import PASSWORD, describe, make_tree
from tests.conftest import REPO


def _child(op: str, repo: Path, arg: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.backup.crash_child", op, str(repo), arg, str(n)],
                          env=env, cwd=REPO, capture_output=True, timeout=300).returncode


def _assert_whole(repo_dir: Path, tmp: Path, want: dict[str, object], first: str) -> None:
    """verify --read-data is clean (every listed snapshot's data reads back), the first one restores exactly."""
    repo = Repository.open(LocalStore(repo_dir), PASSWORD)
    report = check(repo, read_data=True)
    assert report.ok, (report.errors, report.damaged)
    snaps = {s.id: s for s in repo.snapshots()}
    if first in snaps:
        out = tmp / "check"
        restore(repo, snaps[first], out, durable=False)
        assert describe(out / "src") == want
        shutil.rmtree(out)
    with lock(repo, exclusive=True):  # a killed writer's lock is stale: its pid is gone
        pass


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, dict[str, object]]:
    base = tmp_path_factory.mktemp("safety")
    src = make_tree(base / "src")
    repo = Repository.init(LocalStore(base / "repo"), PASSWORD)
    with lock(repo):
        snap, _ = backup(repo, {"src": src}, tags=["t"])
    repo.close()
    return base / "repo", src, snap.id, describe(src)


@pytest.mark.parametrize("n", [1, 2, 4])  # in the lock, after the first pack, at the snapshot
def test_kill_during_backup_leaves_earlier_snapshots_whole(repo_dir: tuple[Path, Path, str, dict[str, object]],
                                                            tmp_path: Path, n: int) -> None:
    repo, src, first, want = repo_dir
    grown = tmp_path / "grown"
    subprocess.run(["cp", "-a", str(src), str(grown)], check=True)
    (grown / "more.bin").write_bytes(os.urandom(18 << 20))  # more than one pack
    _child("backup", repo, str(grown), n)
    _assert_whole(repo, tmp_path, want, first)
    assert not list(repo.rglob(".tmp-*")), "a killed backup's pack spool is an unnamed file: nothing is left"


def test_kill_during_prune_leaves_kept_snapshots_whole(repo_dir: tuple[Path, Path, str, dict[str, object]],
                                                       tmp_path: Path) -> None:
    repo, src, first, want = repo_dir
    for i in range(3):  # three more snapshots with data of their own, so prune has packs to drop and repack
        (src / "dir" / "churn.bin").write_bytes(os.urandom(3 << 20) + bytes([i]))
        assert _child("backup", repo, str(src), 1 << 30) == 0
    os.unlink(src / "dir" / "churn.bin")
    before = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    codes = []
    for n in (2, 6, 1 << 30):  # while forgetting, while repacking or deleting, then to the end
        codes.append(_child("prune", repo, "2", n))
        _assert_whole(repo, tmp_path, want, first)
        if codes[-1] == 0:
            break
    assert -9 in codes and codes[-1] == 0, codes  # killed at some points, and a later prune finished
    r = Repository.open(LocalStore(repo), PASSWORD)
    assert len(r.snapshots()) == 2
    after = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    assert after < before - (3 << 20), "the forgotten snapshots' own data is gone"


def test_kill_during_restore_shows_no_half_restored_tree(repo_dir: tuple[Path, Path, str, dict[str, object]],
                                                         tmp_path: Path) -> None:
    repo, _src, _first, _want = repo_dir
    target = tmp_path / "restored"
    assert _child("restore", repo, str(target), 2) == -9
    assert not target.exists()
    leftovers = list(tmp_path.glob(".restored.restore-*"))
    assert leftovers, "the killed restore's temp directory is where we expect it"
    r = Repository.open(LocalStore(repo), PASSWORD)
    restore(r, r.snapshots()[0], target, durable=False)
    assert (target / "src" / "dir" / "hello.txt").read_text() == "hello\n"
    assert not list(tmp_path.glob(".restored.restore-*")), "the next restore removes a dead one's temp dir"


def test_flipped_byte_is_named_by_verify_and_refused_by_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(200_000))
    (src / "b.bin").write_bytes(os.urandom(200_000))
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSWORD)
    with lock(repo):
        snap, _ = backup(repo, {"src": src})
    a_blob = bytes.fromhex(next(n for n in repo.load_tree(next(
        n for n in repo.load_tree(snap.tree))["subtree"]) if n["name"] == "a.bin")["content"][0])
    e = repo.index[a_blob]
    pack = tmp_path / "repo" / "data" / e.pack[:2] / e.pack
    os.chmod(pack, 0o600)
    raw = bytearray(pack.read_bytes())
    raw[e.offset + e.length // 2] ^= 0x01
    pack.write_bytes(bytes(raw))

    report = check(Repository.open(LocalStore(tmp_path / "repo"), PASSWORD), read_data=True)
    assert not report.ok
    assert [(d.snapshot, d.path) for d in report.damaged] == [(snap.short_id, "/src/a.bin")]

    with pytest.raises(FailedPrecondition, match=r"damaged.*src/a\.bin"):
        restore(repo, snap, tmp_path / "out", durable=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.restore-*"))


def _hostile(tmp_path: Path, nodes: list[dict[str, object]]) -> tuple[Repository, Snapshot]:
    repo = Repository.open_or_init(LocalStore(tmp_path / "repo"), PASSWORD)
    times = {"mode": 0o644, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}
    content = repo.save_blob(BLOB_DATA, b"pwned\n").hex()
    full = [{**times, "content": [content], "size": 6, **n} if n.get("type") == "file" else {**times, **n}
            for n in nodes]
    tree = repo.save_tree(full)
    snap = repo.save_snapshot({"time": "2026-01-01T00:00:00+00:00", "tree": tree, "tags": [], "hostname": "x",
                               "parent": None, "summary": {}, "meta": {}})
    return repo, snap


@pytest.mark.parametrize("name", ["..", ".", "../../escape", "/abs/path", "a/b", ""])
def test_hostile_names_write_nothing_outside(tmp_path: Path, name: str) -> None:
    repo, snap = _hostile(tmp_path, [{"name": name, "type": "file"}])
    (tmp_path / "t").mkdir()
    with pytest.raises(FailedPrecondition, match="bad file name"):
        restore(repo, snap, tmp_path / "t" / "out", durable=False)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == []
    assert not (tmp_path / "escape").exists() and not Path("/abs/path").exists()


def test_symlink_out_then_a_directory_through_it_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo, _ = _hostile(tmp_path, [])
    sub = repo.save_tree([{"name": "evil", "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "atime_ns": 0,
                           "mtime_ns": 0, "size": 6, "content": [repo.save_blob(BLOB_DATA, b"pwned\n").hex()]}])
    t = {"mode": 0o755, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}
    tree = repo.save_tree([{**t, "name": "link", "type": "symlink", "target": str(outside)},
                           {**t, "name": "link", "type": "dir", "subtree": sub}])
    snap2 = repo.save_snapshot({"time": "2026-01-01T00:00:01+00:00", "tree": tree, "tags": [], "hostname": "x",
                                "parent": None, "summary": {}, "meta": {}})
    with pytest.raises(FailedPrecondition, match="twice"):
        restore(repo, snap2, tmp_path / "out", durable=False)
    assert list(outside.iterdir()) == [] and not (tmp_path / "out").exists()


def test_symlinks_are_restored_but_never_followed_and_devices_are_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    t = {"mode": 0o644, "uid": 0, "gid": 0, "atime_ns": 0, "mtime_ns": 0}
    repo, snap = _hostile(tmp_path, [
        {**t, "name": "link", "type": "symlink", "target": str(outside / "victim")},
        {**t, "name": "sda", "type": "blockdev", "rdev": os.makedev(8, 0)},
        {**t, "name": "mem", "type": "chardev", "rdev": os.makedev(1, 1)},
        {**t, "name": "whiteout", "type": "chardev", "rdev": 0},
    ])
    summary = restore(repo, snap, tmp_path / "out", durable=False)
    assert os.readlink(tmp_path / "out" / "link") == str(outside / "victim")
    assert list(outside.iterdir()) == []
    assert sorted(summary.skipped_devices) == ["mem", "sda"]
    assert not (tmp_path / "out" / "sda").exists() and not (tmp_path / "out" / "mem").exists()
    if os.geteuid() == 0:
        assert os.stat(tmp_path / "out" / "whiteout").st_rdev == 0  # overlay whiteouts survive
