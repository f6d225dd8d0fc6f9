"""Rootless: an environment's files moved from one user namespace map to another, keeping who is who inside.

A rootless container runs in the keeper's namespace (0 = the user, 1.. = the subuids). A plain one sees keeper
ids as they are; a ``--userns keep-id:uid=U`` one (a local folder with a non-root remoteUser) sees them permuted:
its root is keeper id 1, U is keeper id 0 (flex/runtime/userns/keep_id.py). So files made under one map and used
under another — a restored writable layer or volume (stored as seen inside: the plain map), or the volumes of an
environment whose remoteUser changed uid — must have their owners moved, or uid 1000's files come out as someone
else's. A permutation cannot be redone safely in place after a kill -9 (which files were done?), so the tree is
copied with new owners (flex/runtime/userns/shift.py) and exchanged with it, each step recorded first.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from flex.atomic import exchange, write_atomic
from flex.errors import FailedPrecondition
from flex.runtime.containers.store import Containers
from flex.runtime.userns.keep_id import parse_userns
from flex.runtime.userns.keeper import Keeper
from flex.runtime.userns.shift import copy_shifted

__all__ = ["MAP_FILE", "ids_for", "record_map", "shift_copy", "shift_volume"]

MAP_FILE = "volume-userns.json"  # state/<id>/: the map the volume's owners are in, while it is not the container's

Rows = tuple[tuple[int, int, int], ...]


def ids_for(store: Containers, userns: str | None) -> tuple[Rows, Rows]:
    """A container's map onto keeper ids (inside, keeper, count): the plain one is the identity."""
    keeper = store.rootless_idmap()
    keep = parse_userns(userns)
    if keep is None:
        return tuple((a, a, n) for a, _, n in keeper.uids), tuple((a, a, n) for a, _, n in keeper.gids)
    inner = keep.inner(keeper)
    return inner.uids, inner.gids


def _through(old: Rows, new: Rows) -> Callable[[int], int]:
    """keeper id under ``old`` → the id inside → keeper id under ``new``; an id neither maps stays."""
    def fn(k: int) -> int:
        for inside, outside, n in old:
            if outside <= k < outside + n:
                inner = k - outside + inside
                for a, b, m in new:
                    if a <= inner < a + m:
                        return b + inner - a
        return k
    return fn


def shift_copy(store: Containers, src: Path, dst: Path, old: str | None, new: str | None, *,
               top_owner: tuple[int, int] | None = None) -> None:
    """``src`` copied to ``dst`` (replaced whole) with owners moved from map ``old`` to ``new``, as root in the
    keeper's namespace; ``dst`` appears only when the copy is whole and on disk. ``top_owner`` (keeper ids)
    owns the copy's top instead."""
    (ou, og), (nu, ng) = ids_for(store, old), ids_for(store, new)
    uid_of, gid_of = _through(ou, nu), _through(og, ng)
    part = dst.with_name(dst.name + ".part")

    def copy() -> None:
        shutil.rmtree(part, ignore_errors=True)
        copy_shifted(src, part, uid_of, gid_of)
        if top_owner is not None:
            mode = os.lstat(part).st_mode
            os.chown(part, *top_owner)
            os.chmod(part, mode & 0o7777)
        if dst.exists():
            shutil.rmtree(dst)
        part.rename(dst)

    _keeper(store).call(copy, f"moving the owners of {src} into the container's user namespace")


def record_map(state: Path, userns: str | None, *, replace: bool = False) -> None:
    """The volume's owners are in map ``userns`` ("" or None: the plain one). Without ``replace``, an existing
    record wins: the volume was never moved out of the map it names."""
    if replace or not (state / MAP_FILE).exists():
        write_atomic(state / MAP_FILE, json.dumps({"userns": userns or ""}))


def shift_volume(store: Containers, state: Path, volume: Path, userns: str | None) -> bool:
    """Before a container of map ``userns`` first starts: the volume moved into its map if MAP_FILE names
    another. The volume is never missing (a reconcile that found it gone would make an empty one): the record
    says where to (``to``), a copy with new owners is made as ``.<name>.shift``, the record notes the copy's
    inode, the copy and the volume are exchanged in one step, the record names the new map, the old tree
    goes. Each step is recorded before the next, so a kill -9 anywhere is finished by the next call. True if
    owners were moved."""
    from flex.runner.reconcile import crash_point  # (reconcile imports this module)

    record = state / MAP_FILE
    fresh = volume.with_name(f".{volume.name}.shift")
    keeper, want, moved = _keeper(store), userns or "", False

    def remove(p: Path) -> None:
        if p.exists():
            keeper.call(lambda: shutil.rmtree(p), f"removing {p}")

    while True:
        try:
            was = json.loads(record.read_text())
        except FileNotFoundError:
            break
        old, to, ino = str(was.get("userns") or ""), was.get("to"), was.get("copy")
        if to is not None and ino is not None:  # a copy was whole: exchanged already, or to be
            if volume.stat().st_ino != ino:
                keeper.call(lambda: exchange(fresh, volume), "putting the volume's copy in place")
            write_atomic(record, json.dumps({"userns": to}))
            remove(fresh)  # the old tree now
            moved = True
            continue
        if old == want:
            record.unlink()
            break
        write_atomic(record, json.dumps({"userns": old, "to": want}))
        shift_copy(store, volume, fresh, old or None, want or None, top_owner=(0, 0))  # the runner's, as made
        crash_point("volume-shift-copied")
        write_atomic(record, json.dumps({"userns": old, "to": want, "copy": fresh.stat().st_ino}))
        crash_point("volume-shift-noted")
        keeper.call(lambda: exchange(fresh, volume), "putting the volume's copy in place")
        crash_point("volume-shift-swapped")
        write_atomic(record, json.dumps({"userns": want}))
        remove(fresh)
        moved = True
    remove(fresh)  # a copy cut short, or the old tree after a kill -9 following the record's last write
    return moved


def _keeper(store: Containers) -> Keeper:
    keeper = store.keeper
    if keeper is None:
        raise FailedPrecondition("moving owners between user namespace maps is for rootless runners")
    return keeper
