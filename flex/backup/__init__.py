"""flex.backup: a deduplicated, encrypted, verifiable backup repository, like restic's; knows nothing of
environments (the runner says what to back up). Imports nothing from flex but flex.errors, flex.atomic,
flex.home and flex.sqlite; the runner and the CLI use it, the control plane does not. Format: docs/backup.md.

    store = open_store("s3:http://127.0.0.1:8333/backups")       # or a directory
    repo = Repository.open_or_init(store, password)
    with lock(repo):
        snap, summary = backup(repo, {"workspace": Path(...)}, id_offset=100000, tags=["env:abc"])
    restore(repo, snap, Path("/new/place"), id_offset=200000)
    report = check(repo, read_data=True)
"""

from __future__ import annotations

from flex.backup.archiver import BackupSummary, backup
from flex.backup.check import CheckReport, Damage, check
from flex.backup.lock import lock
from flex.backup.repository import Repository, Snapshot
from flex.backup.restorer import RestoreSummary, restore
from flex.backup.retention import Policy, PruneSummary, apply_policy, prune
from flex.backup.stores import LocalStore, Store, open_store

__all__ = ["BackupSummary", "CheckReport", "Damage", "LocalStore", "Policy", "PruneSummary", "Repository",
           "RestoreSummary", "Snapshot", "Store", "apply_policy", "backup", "check", "lock", "open_store",
           "prune", "restore"]
