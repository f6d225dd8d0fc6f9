"""The root runner's id pool claimed from several FLEX_HOMEs at once, as several runtimes on one machine do."""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from flex.runtime.base.metadata import MetadataDB
from flex.runtime.userns import idpool

ROUNDS = 150
HOMES = 4


def _home(barrier: Barrier, results: Any, home: Path) -> None:
    pool = idpool.IdPool(MetadataDB(home / "runtime.db"))
    for n in range(ROUNDS):
        target = home / f"ctr{n}"
        target.mkdir()
        barrier.wait()  # the stale claim is in place: every home allocates at once
        results.put((n, pool.allocate(f"ctr{n}", target)))
        barrier.wait()  # every home has its range: let them go
        pool.release(f"ctr{n}")
        target.rmdir()
        barrier.wait()  # every range is released: the next round may begin


def test_homes_taking_over_a_stale_claim_at_once_never_share_a_range(tmp_path: Path) -> None:
    # Before the fix, one home could unlink another's fresh claim while taking over the stale one (it
    # had read the stale link just before), then make its own: both held the first range, in about one
    # round in 15 with four homes.
    claims = tmp_path / "claims"
    claims.mkdir()
    idpool.CLAIMS, saved = claims, idpool.CLAIMS
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(HOMES + 1), ctx.Queue()
    homes = [tmp_path / f"home{i}" for i in range(HOMES)]
    procs = []
    try:
        for h in homes:
            h.mkdir()
            procs.append(ctx.Process(target=_home, args=(barrier, results, h)))
            procs[-1].start()
        shared = []
        for n in range(ROUNDS):
            stale = claims / str(idpool.POOL_START)
            os.symlink(tmp_path / f"removed-container-{n}", stale)  # its container is gone, long ago
            os.utime(stale, (1, 1), follow_symlinks=False)
            barrier.wait(timeout=60)
            got = [results.get(timeout=60) for _ in homes]
            barrier.wait(timeout=60)
            bases = [base for _, base in got]
            if len(set(bases)) != len(bases):
                shared.append((n, bases))
            barrier.wait(timeout=60)
            assert not [p.name for p in claims.iterdir() if p.name.isdigit()], "release drops every claim"
        assert not shared, f"rounds where two homes got the same range: {shared[:5]} ({len(shared)}/{ROUNDS})"
    finally:
        idpool.CLAIMS = saved
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
