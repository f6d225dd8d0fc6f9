"""Verify: is every snapshot whole, and (``read_data``) does every stored byte authenticate?

Imports nothing from flex but flex.errors. Without ``read_data`` it loads every index and tree and checks
that each referenced blob is indexed and each indexed pack exists with its size. With it, it reads every
pack, checks its hash against its name, and opens every blob; damaged blobs are traced to the snapshots
and files that use them, so the report says what a restore would lose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flex.backup.pack import open_blob, pack_name, read_header
from flex.backup.repository import Repository, Snapshot
from flex.errors import FlexError

__all__ = ["CheckReport", "Damage", "check", "walk_files"]


@dataclass
class Damage:
    snapshot: str
    path: str
    blob: str


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    errors: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)
    unreferenced_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.damaged


def walk_files(repo: Repository, tid: str, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, node) of every node under a tree, trees loaded (and so checked) on the way."""
    for node in repo.load_tree(tid):
        path = f"{prefix}/{node.get('name')}"
        yield path, node
        if node.get("type") == "dir" and node.get("subtree"):
            yield from walk_files(repo, str(node["subtree"]), path)


def _trace(repo: Repository, snap: Snapshot, bad: set[bytes], report: CheckReport) -> None:
    if bytes.fromhex(snap.tree) in bad:
        report.damaged.append(Damage(snap.short_id, "/", snap.tree[:16]))
        return
    try:
        for path, node in walk_files(repo, snap.tree):
            ids = list(node.get("content", []))
            if node.get("subtree"):
                ids.append(node["subtree"])
            for h in ids:
                bid = bytes.fromhex(h)
                if bid in bad or bid not in repo.index:
                    report.damaged.append(Damage(snap.short_id, path, h[:16]))
                    break
    except FlexError as err:
        report.errors.append(f"snapshot {snap.short_id}: {err.message}")


def check(repo: Repository, *, read_data: bool = False) -> CheckReport:
    report = CheckReport()
    repo.load_index()
    packs: dict[str, int] = {}
    for e in repo.index.values():
        packs[e.pack] = max(packs.get(e.pack, 0), e.offset + e.length)
    stored = {name.rsplit("/", 1)[1] for name in repo.store.list("data/")}
    report.unreferenced_packs = len(stored - set(packs))
    bad: set[bytes] = set()
    for pid, end in sorted(packs.items()):
        report.packs += 1
        if pid not in stored:
            report.errors.append(f"pack {pid[:16]} is missing")
            bad.update(bid for bid, e in repo.index.items() if e.pack == pid)
            continue
        if not read_data:
            if repo.store.size(pack_name(pid)) < end:
                report.errors.append(f"pack {pid[:16]} is truncated")
            continue
        data = repo.store.get(pack_name(pid))
        entries = {bid: e for bid, e in repo.index.items() if e.pack == pid}
        if hashlib.sha256(data).hexdigest() != pid:
            report.errors.append(f"pack {pid[:16]} is damaged: its hash is not its name")
        try:
            header = {h.id: h for h in read_header(repo.key, data, f"pack {pid[:16]}")}
        except FlexError as err:
            report.errors.append(err.message)
            header = {}
        for bid, e in entries.items():
            report.blobs += 1
            h = header.get(bid)
            if header and (h is None or (h.offset, h.length) != (e.offset, e.length)):
                report.errors.append(f"pack {pid[:16]}: blob {bid.hex()[:16]} is not where the index says")
            try:
                open_blob(repo.key, e.type, bid, data[e.offset:e.offset + e.length], e.raw_length)
            except FlexError:
                bad.add(bid)
    for snap in repo.snapshots():
        report.snapshots += 1
        _trace(repo, snap, bad, report)
    return report
