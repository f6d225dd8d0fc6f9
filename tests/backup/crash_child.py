"""Run one repository operation and kill -9 ourselves after the N-th object the store writes or deletes.

    python -m tests.backup.crash_child backup|prune|restore REPO ARG N

A real SIGKILL at a chosen point of the real code path: the store is the real LocalStore; only its
``put``/``put_spool``/``delete`` count calls first. Used by test_safety.py.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from flex.backup import LocalStore, Policy, Repository, apply_policy, backup, lock, prune, restore
from flex.backup.stores.base import Spool
from tests.backup.conftest import PASSWORD


class _Killing(LocalStore):
    def __init__(self, root: Path, after: int):
        super().__init__(root)
        self.left = after

    def _tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def put(self, name: str, data: bytes) -> None:
        self._tick()
        super().put(name, data)

    def put_spool(self, name: str, spool: Spool) -> None:
        self._tick()
        super().put_spool(name, spool)

    def delete(self, name: str) -> None:
        self._tick()
        super().delete(name)


class _KillingRestore(LocalStore):
    """Restore writes nothing to the store: count reads instead."""

    def __init__(self, root: Path, after: int):
        super().__init__(root)
        self.left = after

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            self.left -= 1
            if self.left < 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().get(name, offset, length)


def main() -> None:
    op, repo_dir, arg, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    store = (_KillingRestore if op == "restore" else _Killing)(repo_dir, 1 << 30)
    repo = Repository.open(store, PASSWORD)
    store.left = n  # count from here: opening reads only
    if op == "backup":
        with lock(repo):
            backup(repo, {"src": Path(arg)}, parent=repo.snapshots()[-1], tags=["t"])
    elif op == "prune":
        with lock(repo, exclusive=True):
            _, remove = apply_policy(repo.snapshots(), Policy(keep_last=int(arg)))
            for s in remove:
                repo.forget(s)
            prune(repo)
    else:
        restore(repo, repo.snapshots()[0], Path(arg))
    repo.close()


if __name__ == "__main__":
    main()
