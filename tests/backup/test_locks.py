"""Repository locks between processes: a prune excludes backups, and a taker that waits gets the lock once
the holder lets go, where one that does not wait is refused with a line naming the holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flex.backup import LocalStore, Repository, backup, lock
from flex.errors import Conflict
from tests.backup.conftest import PASSWORD, make_tree
from tests.conftest import REPO

_HOLDER = """
import sys, time
from pathlib import Path
from flex.backup import LocalStore, Repository, lock
from tests.backup.conftest import PASSWORD
repo = Repository.open(LocalStore(Path(sys.argv[1])), PASSWORD)
with lock(repo, exclusive=sys.argv[2] == "exclusive"):
    Path(sys.argv[3]).write_text("held")
    time.sleep(float(sys.argv[4]))
"""


def _hold(repo: Path, kind: str, seconds: float, tmp: Path) -> subprocess.Popen[bytes]:
    flag = tmp / f"held-{kind}"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(repo), kind, str(flag), str(seconds)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the holder never took its lock"
        time.sleep(0.05)
    return child


@pytest.mark.parametrize(("held", "wanted"), [("exclusive", False), ("shared", True)])
def test_a_waiting_taker_gets_the_lock_when_the_other_process_lets_go(tmp_path: Path, held: str,
                                                                      wanted: bool) -> None:
    root = tmp_path / "repo"
    Repository.init(LocalStore(root), PASSWORD).close()
    repo = Repository.open(LocalStore(root), PASSWORD)
    child = _hold(root, held, 2.0, tmp_path)
    try:
        with pytest.raises(Conflict, match=f"{root} is locked: .*held by pid {child.pid}"), \
                lock(repo, exclusive=wanted):
            pass
        with lock(repo, exclusive=wanted, wait=120) as lk:
            assert child.poll() is not None, "the lock was taken while the other process still held it"
            if not wanted:  # a backup once the prune is over
                backup(repo, {"src": make_tree(tmp_path / "src")}, tags=["t"])
            assert lk.name
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    assert list(repo.store.list("locks/")) == []  # released: the next taker finds nothing in its way
    repo.close()


def test_a_wait_that_runs_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository.init(LocalStore(root), PASSWORD).close()
    repo = Repository.open(LocalStore(root), PASSWORD)
    child = _hold(root, "exclusive", 30.0, tmp_path)
    try:
        with pytest.raises(Conflict, match="is locked"), lock(repo, wait=1.0):
            pass
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    repo.close()
