"""Memory (issue 17): a backup's peak does not grow with what it writes, chunks are cut where they always were,
and indexes are written as the backup goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyfastcdc import FastCDC

import flex.backup.repository as repository
from flex.backup import LocalStore, Repository, backup, check, lock, restore
from flex.backup.chunker import Chunker
from tests.backup.conftest import PASSWORD, describe
from tests.conftest import REPO

_CHILD = """
import os, sys
from pathlib import Path
from flex.backup import LocalStore, Repository, backup, lock
repo = Repository.open_or_init(LocalStore(Path(sys.argv[2])), b"pw")
if sys.argv[1] == "backup":
    with lock(repo):
        backup(repo, {"src": Path(sys.argv[3])})
repo.close()
"""


def _peak(*args: str) -> int:
    """Max RSS in bytes of a fresh process running _CHILD."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode()  # to its end first: a full pipe would stall the child
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err[-2000:]
    return usage.ru_maxrss * 1024


def test_backup_peak_memory_does_not_grow_with_the_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):  # incompressible, several packs' worth, files larger than the largest chunk
        with open(src / f"blob{i}.bin", "wb") as f:
            for _ in range(32):
                f.write(os.urandom(1 << 20))
    opened = _peak("open", str(tmp_path / "repo"))  # start-up, the key derivation (32 MiB) and the index
    backed_up = _peak("backup", str(tmp_path / "repo2"), str(src))
    # a pack in memory (16 MiB), two more in flight and a chunker buffer of 16 MiB came to ~80 MiB above this
    assert backed_up - opened < 24 << 20, (opened >> 20, backed_up >> 20)


def test_chunks_are_cut_where_pyfastcdc_cuts(tmp_path: Path) -> None:
    """Repositories written before keep deduplicating: the same bytes give the same chunks."""
    path = tmp_path / "mixed"
    with open(path, "wb") as f:
        f.write(os.urandom(20 << 20))
        f.write(bytes(20 << 20))  # no cut point: chunks of the maximum size
        f.write(b"def value(self):\n    return None\n" * 300_000)
        f.write(os.urandom(3 << 20))
    size = path.stat().st_size
    avg, low, high, seed = 1 << 20, 512 << 10, 8 << 20, 0x5EED | 1
    cdc, ours = FastCDC(avg, min_size=low, max_size=high, seed=seed), Chunker(avg, low, high, seed)

    class Region:
        def __init__(self, fd: int, offset: int, left: int):
            self.fd, self.pos, self.left = fd, offset, left

        def read(self, n: int) -> bytes:
            data = os.pread(self.fd, min(n, self.left), self.pos)
            self.pos, self.left = self.pos + len(data), self.left - len(data)
            return data

    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in [(0, size), (12345, size - 99999), (3 << 20, 700 << 10), (0, 100), (0, 0)]:
            want = [bytes(c.data) for c in cdc.cut_stream(Region(fd, offset, length))]
            got = [bytes(c) for c in ours.chunks(fd, offset, length)]
            assert [len(c) for c in got] == [len(c) for c in want] and got == want, (offset, length)
        assert max(len(c) for c in ours.chunks(fd, 0, size)) == high
    finally:
        os.close(fd)


def test_indexes_are_written_as_the_backup_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "INDEX_BLOBS", 4)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(400 << 10))  # one chunk each (under min_size), one pack each
    monkeypatch.setattr(repository, "PACK_SIZE", 256 << 10)
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSWORD)
    with lock(repo):
        snap, summary = backup(repo, {"src": src})
    repo.close()
    assert summary.blobs_added == 22  # 20 files, the directory and the root
    indexes = list((tmp_path / "repo" / "index").iterdir())
    assert len(indexes) >= 5, "an index for every few blobs, not one at the end"
    repo = Repository.open(LocalStore(tmp_path / "repo"), PASSWORD)
    report = check(repo, read_data=True)
    assert report.ok and report.unreferenced_packs == 0, report
    restore(repo, snap, tmp_path / "out", durable=False)
    assert describe(tmp_path / "out" / "src") == describe(src)
