"""Image GC against what runs beside it: the runtime database stays writable while GC deletes trees, and
an unpack's snapshot is leased before it exists. Real content store, snapshots and SQLite; audit hooks
(sys.addaudithook) only watch, or choose the moment at which the real code runs."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flex.runtime.base.home import Home
from flex.runtime.gc.collect import collect
from flex.runtime.images.store import ImageStore
from flex.runtime.leases.leases import lease
from flex.runtime.unpack.unpacker import unpack_layer

_hooks: dict[str, Callable[[str, tuple[Any, ...]], None]] = {}
_inside = threading.local()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    hook = _hooks.get(threading.current_thread().name)
    if hook is not None and not getattr(_inside, "busy", False):
        _inside.busy = True  # the hook's own I/O raises events too
        try:
            hook(event, args)
        finally:
            _inside.busy = False


sys.addaudithook(_audit)  # (cannot be removed: it does nothing unless a test's thread installs a hook)


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """An uncompressed layer tar and its diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _db_write_locked(db_path: Path) -> bool:
    conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as err:
        assert "locked" in str(err), err
        return True
    finally:
        conn.close()


def test_gc_deletes_snapshot_trees_without_holding_the_database(tmp_path: Path) -> None:
    # Before the fix, GC walked (for sizes) and deleted every doomed snapshot tree inside its write
    # transaction: with a big image, every pull and create waited, and timed out after 30 s.
    store = ImageStore(Home.open(tmp_path / "home"))
    for n in range(3):  # unnamed layers (a removed image): garbage
        data, _ = _layer({f"dir/file{i}": b"x" * 100 for i in range(50)} | {"n": str(n).encode()})
        store.snapshots.prepare(f"extract-{n}")
        key = f"layer-{n}"
        unpacked = store.snapshots.dir(f"extract-{n}")
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            tf.extractall(unpacked, filter="data")
        store.snapshots.commit(key, f"extract-{n}")
    deletions: list[tuple[str, bool]] = []
    snapshots_root = str(store.snapshots.root)

    def watch(event: str, args: tuple[Any, ...]) -> None:
        if event in ("os.remove", "os.unlink", "os.rmdir", "shutil.rmtree") and args and \
                str(args[0]).startswith(snapshots_root):
            deletions.append((str(args[0]), _db_write_locked(store.db.path)))

    result: dict[str, Any] = {}

    def gc() -> None:
        _hooks["gc"] = watch
        try:
            result["gc"] = collect(store)
        finally:
            del _hooks["gc"]
    t = threading.Thread(target=gc, name="gc")
    t.start()
    t.join(120)
    assert sorted(result["gc"].snapshots) == ["layer-0", "layer-1", "layer-2"]
    assert result["gc"].freed > 0
    assert deletions, "GC deleted the snapshot trees"
    locked = [path for path, was_locked in deletions if was_locked]
    assert not locked, f"{len(locked)} of {len(deletions)} deletions held the database's write lock: {locked[:3]}"
    assert [p.name for p in store.snapshots.root.iterdir()] == []


def test_an_unpack_leases_its_snapshot_before_gc_can_see_it(tmp_path: Path) -> None:
    # Before the fix, unpack_layer prepared its extract-… snapshot and only then added it to the lease:
    # a GC in between removed it, and the unpack failed (or wrote into a directory GC was deleting).
    store = ImageStore(Home.open(tmp_path / "home"))
    data, diff_id = _layer({"etc/hostname": b"flex\n"})
    blob = store.content.put(data)
    with lease(store.db) as held:
        held.add("content", blob)

        def gc_then_hold(key: str) -> None:
            collect(store)  # a prune from another process, at the worst moment
            held.add("snapshot", key)
        res = unpack_layer(store.snapshots, store.content.path(blob), diff_id, None, on_key=gc_then_hold)
        held.add("snapshot", res.chain_id)
        assert res.unpacked and store.snapshots.stat(diff_id).kind.value == "committed"
        assert (store.snapshots.dir(diff_id) / "etc/hostname").read_text() == "flex\n"
