"""Retention and prune: which snapshots to keep (restic's --keep-last/--keep-daily/--keep-weekly), and
removing the data no snapshot needs. Imports nothing from flex but flex.errors.

Snapshots are grouped by their tags (one group per environment, say); a policy applies per group. A
snapshot is kept if any rule keeps it. Prune runs under the exclusive lock and never deletes before what
replaces it is written: repacked packs, then the new index, then old indexes, then old packs. A kill -9
at any point leaves every kept snapshot whole (at worst, unreferenced packs the next prune removes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flex.backup.check import walk_files
from flex.backup.pack import PackEntry, PackWriter, pack_name, read_header
from flex.backup.repository import Repository, Snapshot

__all__ = ["Policy", "PruneSummary", "apply_policy", "prune"]

# Repack a pack when at least this share of its bytes is unused (restic's default --max-unused is 5%).
REPACK_UNUSED = 0.05


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0

    @property
    def empty(self) -> bool:
        return not (self.keep_last or self.keep_daily or self.keep_weekly)


@dataclass
class PruneSummary:
    packs_deleted: int = 0
    packs_written: int = 0
    bytes_freed: int = 0


def _buckets(snaps: list[Snapshot], n: int, key: str) -> set[str]:
    """The newest snapshot of each of the ``n`` newest days (or ISO weeks) that have one."""
    kept: set[str] = set()
    seen: set[tuple[int, ...]] = set()
    for s in snaps:
        t = dt.datetime.fromisoformat(s.time)
        b = (t.year, t.month, t.day) if key == "day" else tuple(t.isocalendar()[:2])
        if b not in seen and len(seen) < n:
            seen.add(b)
            kept.add(s.id)
    return kept


def apply_policy(snapshots: list[Snapshot], policy: Policy) -> tuple[list[Snapshot], list[Snapshot]]:
    """(keep, remove). An empty policy keeps everything."""
    if policy.empty:
        return list(snapshots), []
    groups: dict[tuple[str, ...], list[Snapshot]] = {}
    for s in snapshots:
        groups.setdefault(tuple(s.tags), []).append(s)
    keep_ids: set[str] = set()
    for snaps in groups.values():
        newest = sorted(snaps, key=lambda s: s.time, reverse=True)
        keep_ids |= {s.id for s in newest[:policy.keep_last]}
        keep_ids |= _buckets(newest, policy.keep_daily, "day")
        keep_ids |= _buckets(newest, policy.keep_weekly, "week")
    return [s for s in snapshots if s.id in keep_ids], [s for s in snapshots if s.id not in keep_ids]


def _used(repo: Repository) -> set[bytes]:
    used: set[bytes] = set()
    for snap in repo.snapshots():
        used.add(bytes.fromhex(snap.tree))
        for _path, node in walk_files(repo, snap.tree):
            if node.get("subtree"):
                used.add(bytes.fromhex(node["subtree"]))
            used.update(bytes.fromhex(h) for h in node.get("content", []))
    return used


def prune(repo: Repository) -> PruneSummary:
    """Delete data no snapshot uses. The caller holds the exclusive lock."""
    summary = PruneSummary()
    repo.load_index()
    used = _used(repo)
    by_pack: dict[str, list[tuple[bytes, int]]] = {}
    for bid, e in repo.index.items():
        by_pack.setdefault(e.pack, []).append((bid, e.length))
    keep: dict[str, list[PackEntry]] = {}
    drop: set[str] = set()
    writers: dict[int, PackWriter] = {}
    for pid, blobs in by_pack.items():
        total = sum(n for _, n in blobs)
        unused = sum(n for bid, n in blobs if bid not in used)
        if unused == 0:
            e0 = repo.index
            keep[pid] = [PackEntry(e0[b].type, b, e0[b].offset, e0[b].length, e0[b].raw_length) for b, _ in blobs]
            continue
        drop.add(pid)
        summary.bytes_freed += unused
        if unused == total:
            continue
        # copy the used blobs as they are into new packs (sealed data is not re-encrypted)
        data = repo.read_pack(pid)
        for h in read_header(repo.key, data, f"pack {pid[:16]}"):
            if h.id in used and repo.index.get(h.id) is not None and repo.index[h.id].pack == pid:
                w = writers.get(h.type) or writers.setdefault(h.type, PackWriter(repo.key, repo.store.spool()))
                w.add_sealed(h, data[h.offset:h.offset + h.length])
                if w.size >= 16 << 20:
                    repo.write_pack(writers.pop(h.type))
                    summary.packs_written += 1
    for w in writers.values():
        repo.write_pack(w)  # a writer exists only once it holds a blob
        summary.packs_written += 1
    old_indexes = set(repo.index_files)
    # flush() waits for the new packs and writes their index; then one index for the packs we keep
    repo.flush()
    new_indexes = set(repo.index_files) - old_indexes
    if keep:
        new_indexes.add(repo.save_index(keep))
    for oid in old_indexes - new_indexes:
        repo.store.delete(f"index/{oid}")
        repo.index_files.discard(oid)
    indexed = set(keep) | {e.pack for e in repo.index.values() if e.pack not in drop}
    for name in list(repo.store.list("data/")):
        pid = name.rsplit("/", 1)[1]
        if pid in drop or pid not in indexed:
            repo.store.delete(pack_name(pid))
            summary.packs_deleted += 1
    repo.load_index()
    return summary
