"""The repository: content-addressed, deduplicated, encrypted blobs in packs, indexes and snapshots.

Imports nothing from flex but flex.errors. Knows nothing of environments: the caller says what a
snapshot holds. Objects are written once; a backup writes packs, then their index, then the snapshot,
so a crash at any point leaves no snapshot pointing at data that is not stored (docs/backup.md).

    repo = Repository.init(store, password)        # or Repository.open(store, password)
    bid = repo.save_blob(BLOB_DATA, data)          # dedup: a known id is not stored twice
    repo.flush()                                   # packs, then their index
    repo.save_snapshot({...})                      # last

Packs are built in spool files (``Store.spool``), at most two are stored at a time, and an index is
written whenever ``INDEX_BLOBS`` blobs in stored packs are not indexed yet: what a backup holds in memory
does not grow with the size of what it writes (issue 17).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zstandard

from flex.backup.crypto import MasterKey, unwrap_key, wrap_key
from flex.backup.index import Index, IndexEntry
from flex.backup.pack import BLOB_TREE, PackEntry, PackWriter, open_blob, pack_name
from flex.backup.stores.base import Store
from flex.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied

if TYPE_CHECKING:
    from flex.backup.lock import Lock

__all__ = ["INDEX_BLOBS", "PACK_SIZE", "IndexEntry", "Repository", "Snapshot"]

VERSION = 1
PACK_SIZE = 16 << 20
CHUNKER = {"min_size": 512 << 10, "avg_size": 1 << 20, "max_size": 8 << 20}
INDEX_BLOBS = 8192  # an index object is written once this many stored blobs are not in one


@dataclass
class Snapshot:
    id: str
    time: str
    tree: str
    tags: list[str] = field(default_factory=list)
    hostname: str = ""
    parent: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "short_id": self.short_id, "time": self.time, "tree": self.tree, "tags": self.tags,
                "hostname": self.hostname, "parent": self.parent, "summary": self.summary, "meta": self.meta}


class Repository:
    def __init__(self, store: Store, key: MasterKey, config: dict[str, Any]):
        self.store = store
        self.key = key
        self.config = config
        self.index = Index()
        self.index_files: set[str] = set()
        self.current_lock: Lock | None = None
        self._writers: dict[int, PackWriter] = {}
        self._unindexed: dict[str, list[PackEntry]] = {}
        self._pending: set[bytes] = set()  # in packs not indexed yet
        self._unindexed_blobs = 0
        self._uploads: list[Future[None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._zc = zstandard.ZstdCompressor(level=3)
        self._zd = zstandard.ZstdDecompressor()
        self.added_blobs = 0
        self.added_bytes = 0

    # --- opening -----------------------------------------------------------------------------------
    @classmethod
    def init(cls, store: Store, password: bytes) -> Repository:
        if store.exists("config"):
            raise AlreadyExists(f"a backup repository already exists at {store.location}")
        key = MasterKey.generate()
        config = {"version": VERSION, "id": secrets.token_hex(16), "chunker": CHUNKER}
        raw = wrap_key(key, password)
        store.put(f"keys/{hashlib.sha256(raw).hexdigest()}", raw)
        store.put("config", key.seal(json.dumps(config).encode(), b"config"))  # config last: init is whole
        return cls(store, key, config)

    @classmethod
    def open(cls, store: Store, password: bytes) -> Repository:
        if not store.exists("config"):
            raise NotFound(f"no backup repository at {store.location}", hint="create one with the first backup")
        key = None
        for name in store.list("keys/"):
            try:
                key = unwrap_key(store.get(name), password)
                break
            except PermissionDenied:
                continue
        if key is None:
            raise PermissionDenied(f"wrong password for the backup repository at {store.location}")
        config = json.loads(key.open(store.get("config"), b"config", "config"))
        if config.get("version") != VERSION:
            raise FailedPrecondition(f"backup repository version {config.get('version')} is not supported")
        repo = cls(store, key, config)
        repo.load_index()
        return repo

    @classmethod
    def open_or_init(cls, store: Store, password: bytes) -> Repository:
        return cls.open(store, password) if store.exists("config") else cls.init(store, password)

    # --- sealed small objects -----------------------------------------------------------------------
    def save_object(self, kind: str, body: Any) -> str:
        data = self.key.seal(self._zc.compress(json.dumps(body, separators=(",", ":")).encode()), kind.encode())
        oid = hashlib.sha256(data).hexdigest()
        self.store.put(f"{kind}/{oid}", data)
        return oid

    def load_object(self, kind: str, oid: str) -> Any:
        name = f"{kind}/{oid}"
        data = self.store.get(name)
        if hashlib.sha256(data).hexdigest() != oid:
            raise FailedPrecondition(f"{name} is damaged: its hash is not its name")
        return json.loads(self._zd.decompress(self.key.open(data, kind.encode(), name)))

    # --- index ----------------------------------------------------------------------------------------
    def load_index(self) -> None:
        self.index.clear()
        self.index_files.clear()
        for name in self.store.list("index/"):
            oid = name.rsplit("/", 1)[1]
            try:
                for pack in self.load_object("index", oid)["packs"]:
                    pid = pack["id"]
                    for t, bid, off, length, raw in pack["blobs"]:
                        self.index.add(bytes.fromhex(bid), pid, t, off, length, raw, replace=False)
            except (KeyError, TypeError, ValueError, struct.error):
                raise FailedPrecondition(f"index/{oid} is damaged: it does not list packs",
                                         hint="run `flex backup verify`") from None
            self.index_files.add(oid)

    def save_index(self, packs: dict[str, list[PackEntry]]) -> str:
        body = {"packs": [{"id": pid, "blobs": [[e.type, e.id.hex(), e.offset, e.length, e.raw_length] for e in es]}
                          for pid, es in packs.items()]}
        oid = self.save_object("index", body)
        self.index_files.add(oid)
        return oid

    # --- blobs ----------------------------------------------------------------------------------------
    def has_blob(self, bid: bytes) -> bool:
        return bid in self.index or bid in self._pending

    def save_blob(self, btype: int, data: bytes | memoryview) -> bytes:
        bid = self.key.blob_id(data)
        if bid in self.index or bid in self._pending:
            return bid
        w = self._writers.get(btype)
        if w is None:
            w = self._writers[btype] = PackWriter(self.key, self.store.spool())
        w.add(btype, bid, data)
        self._pending.add(bid)
        self.added_blobs += 1
        self.added_bytes += len(data)
        if w.size >= PACK_SIZE:
            self._finish_pack(btype)
        return bid

    def _finish_pack(self, btype: int) -> None:
        w = self._writers.pop(btype, None)
        if w is None:
            return
        if not w.entries:
            w.spool.close()
            return
        self.write_pack(w)

    def write_pack(self, writer: PackWriter) -> None:
        """Store a finished pack in the background (at most two at a time); its index follows."""
        pid, entries = writer.finish()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pack-upload")
        while len(self._uploads) >= 2:
            self._uploads.pop(0).result()
        self._uploads.append(self._pool.submit(self.store.put_spool, pack_name(pid), writer.spool))
        self._unindexed[pid] = entries
        self._unindexed_blobs += len(entries)
        if self.current_lock is not None:
            self.current_lock.refresh()
        if self._unindexed_blobs >= INDEX_BLOBS:
            self._index_stored()

    def _index_stored(self) -> None:
        """Wait for the packs in flight, then index them: only a stored pack is ever indexed."""
        for f in self._uploads:
            f.result()
        self._uploads.clear()
        if self._unindexed:
            self.save_index(self._unindexed)
            for pid, es in self._unindexed.items():
                for e in es:
                    self.index.add(e.id, pid, e.type, e.offset, e.length, e.raw_length)
                    self._pending.discard(e.id)
            self._unindexed = {}
            self._unindexed_blobs = 0

    def flush(self) -> None:
        """Store open packs and index every stored pack; after this the blobs saved so far are durable."""
        for t in list(self._writers):
            self._finish_pack(t)
        self._index_stored()
        self._pending.clear()

    def close(self) -> None:
        for w in self._writers.values():  # a backup that failed: its open packs are dropped
            w.spool.close()
        self._writers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def read_pack(self, pid: str) -> bytes:
        data = self.store.get(pack_name(pid))
        if hashlib.sha256(data).hexdigest() != pid:
            raise FailedPrecondition(f"pack {pid[:16]} is damaged: its hash is not its name",
                                     hint="run `flex backup verify --read-data` to see what it affects")
        return data

    def load_sealed(self, bid: bytes) -> tuple[IndexEntry, bytes]:
        e = self.index.get(bid)
        if e is None:
            raise FailedPrecondition(f"blob {bid.hex()[:16]} is not in the repository's index",
                                     hint="run `flex backup verify` to see what it affects")
        if self.store.location.startswith("s3:"):
            # object storage: fetch a pack once, serve its blobs from a small cache (packs are read in order)
            data = self._cache.get(e.pack)
            if data is not None:
                self._cache.move_to_end(e.pack)  # least recently used goes first: a tree pack stays
            else:
                data = self.store.get(pack_name(e.pack))
                self._cache[e.pack] = data
                while len(self._cache) > 4:
                    self._cache.popitem(last=False)
            return e, data[e.offset:e.offset + e.length]
        return e, self.store.get(pack_name(e.pack), e.offset, e.length)

    def load_blob(self, bid: bytes) -> bytes:
        e, sealed = self.load_sealed(bid)
        return open_blob(self.key, e.type, bid, sealed, e.raw_length)

    def load_tree(self, tid: str) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = json.loads(self.load_blob(bytes.fromhex(tid)))["nodes"]
        return nodes

    def save_tree(self, nodes: list[dict[str, Any]]) -> str:
        return self.save_blob(BLOB_TREE, json.dumps({"nodes": nodes}, separators=(",", ":")).encode()).hex()

    # --- snapshots ------------------------------------------------------------------------------------
    def save_snapshot(self, body: dict[str, Any]) -> Snapshot:
        self.flush()  # every blob the snapshot names is indexed before the snapshot exists
        sid = self.save_object("snapshots", body)
        return Snapshot(id=sid, **body)

    def snapshots(self) -> list[Snapshot]:
        out = []
        for name in self.store.list("snapshots/"):
            sid = name.rsplit("/", 1)[1]
            out.append(Snapshot(id=sid, **self.load_object("snapshots", sid)))
        return sorted(out, key=lambda s: s.time)

    def find_snapshot(self, ref: str) -> Snapshot:
        snaps = self.snapshots()
        if ref == "latest" and snaps:
            return snaps[-1]
        hits = [s for s in snaps if s.id.startswith(ref)] if len(ref) >= 4 else []
        if len(hits) != 1:
            raise NotFound(f"backup {ref!r} {'is ambiguous' if hits else 'does not exist'} in {self.store.location}",
                           hint="list them with `flex backup ls`")
        return hits[0]

    def forget(self, snapshot: Snapshot) -> None:
        self.store.delete(f"snapshots/{snapshot.id}")
