"""The image layers of a rootless ``--userns keep-id`` container: a copy of each layer with its owners moved
for the container's map (userns/keep_id.py, userns/shift.py), made once and kept beside the layer.

A layer snapshot is ``FLEX_HOME/snapshots/<id>/fs``; its copy for keep-id U/G is ``…/<id>/shifted/keep-id-U-G``,
so it goes when the layer goes (GC removes it inside the user's namespace: its files belong to subuids). It is
made as root in the keeper's namespace under ``…/shifted/.tmp-*`` and renamed into place once complete and
synced: a copy cut short by kill -9 is never used, and the next one (under the directory's lock) removes it.
The container holds a lease on the image from before this runs, so GC cannot take the layer meanwhile.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from flex.atomic import fsync_dir
from flex.errors import FailedPrecondition
from flex.runtime.base.lock import file_lock
from flex.runtime.userns.idmap import IdMap
from flex.runtime.userns.keep_id import KeepId
from flex.runtime.userns.keeper import Keeper
from flex.runtime.userns.shift import SHIFTED_DIR, copy_shifted

__all__ = ["shifted_lowers"]


def shifted_lowers(lowers: Sequence[Path], keep: KeepId, inner: IdMap, keeper: Keeper) -> list[Path]:
    """``lowers`` (layer snapshot directories, top first) as copies owned for ``inner``; made if missing."""
    return [_ensure(lower, keep, inner, keeper) for lower in lowers]


def _moved(rows: tuple[tuple[int, int, int], ...]) -> dict[int, int] | None:
    """old keeper id -> new keeper id, for the ids the map moves (None: it moves none)."""
    moved = {a + i: b + i for a, b, n in rows if a != b for i in range(n)}
    return moved or None


def _ensure(lower: Path, keep: KeepId, inner: IdMap, keeper: Keeper) -> Path:
    if lower.name != "fs":
        raise FailedPrecondition(f"{lower} is not a layer of the image store")
    uids, gids = _moved(inner.uids), _moved(inner.gids)
    if uids is None and gids is None:
        return lower  # keep-id:uid=0,gid=0 is the plain map
    base = lower.parent / SHIFTED_DIR
    done = base / keep.tag
    if done.is_dir():
        return done
    base.mkdir(mode=0o711, exist_ok=True)
    with file_lock(base / ".lock"):  # one copy at a time per layer; a second creator waits and reuses it
        if done.is_dir():
            return done
        u, g = uids or {}, gids or {}

        def build() -> None:
            for old in base.glob(".tmp-*"):  # cut short by a kill -9: ours to remove, under the lock
                shutil.rmtree(old)
            tmp = base / f".tmp-{keep.tag}-{os.urandom(4).hex()}"
            copy_shifted(lower, tmp, lambda i: u.get(i, i), lambda i: g.get(i, i))
            os.rename(tmp, done)
            fsync_dir(base)

        keeper.call(build, f"copying image layer {lower.parent.name} with owners for --userns {keep.to_option()}")
    return done
