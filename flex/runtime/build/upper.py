"""A RUN step's overlay upper dir → the step's layer, without copying its files again (issue 13).

The upper dir is moved (one rename) into a fresh ``extract-…`` snapshot, which becomes the layer's
committed snapshot. One walk over it writes the layer tar into a ``LayerSink`` (diff_id, zstd, digest)
and puts each entry into the form a snapshot applied from that tar would have, so a built layer looks
like a pulled one: owners are the image's ids (a root runner's step ran in an id range of its own;
chown clears setuid/setgid bits and file capabilities, so both are put back); overlay xattrs the kernel
(or a rootless step) left are dropped, except opacity, set again in the store's namespace; whiteouts
are 0/0 character devices; sockets go (a tar holds none); mtimes are clamped to SOURCE_DATE_EPOCH;
the root is a bare 0755 directory. One syncfs then covers the files and the blob; the blob is moved
into the content store and the snapshot committed as the chain id. Killed at any point, what is left
is an ``extract-…`` snapshot and a temp blob held by the build's lease: GC's to remove.

Upper entries are read as the step's root sees them: rootless inside the keeper's user namespace,
as root with the id range's offset taken off. When the upper dir is on another filesystem than the
snapshots (no rename), the tar is applied like a pulled layer instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flex.errors import AlreadyExists
from flex.runtime.base.syncfs import syncfs
from flex.runtime.build.layer import LayerBlob, LayerSink, TarWriter, xattrs
from flex.runtime.build.timings import phase

if TYPE_CHECKING:
    from flex.runtime.build.builder import Builder
    from flex.runtime.build.state import State

__all__ = ["prune_created", "take_upper", "write_upper"]

_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT = ("trusted.overlay.whiteout", "user.overlay.whiteout")
_CAPS = "security.capability"


def prune_created(upper: Path, skip: set[str]) -> None:
    """Drop mount points the runtime created in the upper dir (empty files or dirs), and the parents
    made for them once empty (deepest first); what the step itself wrote there stays."""
    for rel in sorted(skip, key=len, reverse=True):
        p = upper / rel
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()


def _is_whiteout(st: os.stat_result, xa: dict[str, bytes]) -> bool:
    return (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or any(k in xa for k in _WHITEOUT)


def write_upper(upper: Path, w: TarWriter, *, id_of: Callable[[int], int] | None, fix: str | None) -> int:
    """Write the overlay upper dir as layer entries (sorted); returns how many. With ``fix`` (the
    store's overlay xattr prefix, ``trusted.`` or ``user.``), also turn each entry into snapshot form."""
    conv = id_of or (lambda i: i)
    count = 0
    if fix is not None:
        _fix_root(upper)

    def walk(rel: str) -> bool:
        """Entries below ``rel``; True if fixing changed the directory itself (its mtime moved)."""
        nonlocal count
        changed = False
        base = os.path.join(upper, rel) if rel else str(upper)
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            arc = f"{rel}/{name}" if rel else name
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                if fix is not None:
                    os.unlink(path)
                    changed = True
                continue
            xa = xattrs(path)
            count += 1
            if _is_whiteout(st, xa):
                w.whiteout(f"{rel}/.wh.{name}" if rel else f".wh.{name}", st.st_mtime)
                if fix is not None and not stat.S_ISCHR(st.st_mode):
                    os.unlink(path)
                    os.mknod(path, stat.S_IFCHR | 0o600, 0)
                    changed = True
                elif fix is not None and stat.S_IMODE(st.st_mode) != 0o600:
                    os.chmod(path, 0o600)  # the kernel makes them 0000; an applied layer's are 0600
                continue
            keep = {k: v for k, v in xa.items() if ".overlay." not in k}
            uid, gid = conv(st.st_uid), conv(st.st_gid)
            is_dir = stat.S_ISDIR(st.st_mode)
            opaque = is_dir and any(xa.get(k) == b"y" for k in _OPAQUE)
            w.add_path(arc + ("/" if is_dir else ""), path, st, uid, gid, keep)
            if fix is not None:
                _fix(path, st, xa, keep, uid, gid, fix, opaque)
            if is_dir:
                if opaque:
                    w.whiteout(f"{arc}/.wh..wh..opq", st.st_mtime)
                if (walk(arc) or _late(st, w.epoch)) and fix is not None:
                    os.utime(path, ns=(st.st_atime_ns, _clamp(st.st_mtime_ns, w.epoch)), follow_symlinks=False)
            elif fix is not None and _late(st, w.epoch):
                os.utime(path, ns=(st.st_atime_ns, _clamp(st.st_mtime_ns, w.epoch)), follow_symlinks=False)
        return changed

    walk("")
    return count


def _late(st: os.stat_result, epoch: int | None) -> bool:
    return epoch is not None and st.st_mtime_ns > epoch * 1_000_000_000


def _clamp(mtime_ns: int, epoch: int | None) -> int:
    return mtime_ns if epoch is None else min(mtime_ns, epoch * 1_000_000_000)


def _fix(path: str, st: os.stat_result, xa: dict[str, bytes], keep: dict[str, bytes], uid: int, gid: int,
         prefix: str, opaque: bool) -> None:
    for k in xa:
        if ".overlay." in k:  # origin, impure, ... from the kernel; redirects a step could set (rootless)
            os.removexattr(path, k, follow_symlinks=False)
    if opaque:
        os.setxattr(path, prefix + "overlay.opaque", b"y", follow_symlinks=False)
    if (uid, gid) != (st.st_uid, st.st_gid):
        os.chown(path, uid, gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            if st.st_mode & 0o6000:
                os.chmod(path, stat.S_IMODE(st.st_mode))
            if _CAPS in keep:
                os.setxattr(path, _CAPS, keep[_CAPS], follow_symlinks=False)


def _fix_root(upper: Path) -> None:
    """The snapshot root as a tar's snapshot has it: the tar has no entry for it."""
    for k in os.listxattr(upper):
        os.removexattr(upper, k)
    st = os.lstat(upper)
    if (st.st_uid, st.st_gid) != (0, 0):
        os.chown(upper, 0, 0)
    os.chmod(upper, 0o755)


def _write(upper: Path, skip: set[str], tmp: Path, compression: str, epoch: int | None,
           id_of: Callable[[int], int] | None, fix: str | None) -> tuple[LayerBlob, Path] | None:
    prune_created(upper, skip)
    sink = LayerSink(tmp, compression)
    try:
        w = TarWriter(sink, epoch)  # type: ignore[arg-type]
        count = write_upper(upper, w, id_of=id_of, fix=fix)
        w.close()
        blob = sink.close()
    except BaseException:
        sink.discard()
        raise
    if count == 0:
        sink.path.unlink()
        return None
    return blob, sink.path


def _walk(b: Builder, upper: Path, skip: set[str], id_of: Callable[[int], int] | None,
          fix: str | None) -> tuple[LayerBlob, Path] | None:
    args: tuple[Any, ...] = (upper, skip, b.ctx.images.home.tmp, b.ctx.compression, b.epoch, id_of, fix)
    keeper = b.ctx.containers.keeper
    if keeper is None:
        return _write(*args)
    r, w = os.pipe()  # the result comes back through it (a few hundred bytes: never blocks)

    def inside() -> None:
        os.close(r)
        res = _write(*args)
        os.write(w, json.dumps(None if res is None else [asdict(res[0]), str(res[1])]).encode())

    try:
        keeper.call(inside, "reading the step's changes")
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            got = json.loads(f.read() or b"null")
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    return None if got is None else (LayerBlob(**got[0]), Path(got[1]))


def take_upper(b: Builder, state: State, upper: Path, skip: set[str], id_of: Callable[[int], int] | None) -> bool:
    """Make the step's upper dir ``state``'s next layer; False if the step changed nothing."""
    snaps = b.ctx.images.snapshots
    key = f"extract-{os.urandom(6).hex()}-build"
    b.ctx.held.add("snapshot", key)  # leased before it exists: GC takes it if we die
    snaps.prepare(key, state.top)
    tmp: Path | None = None
    try:
        fs = snaps.dir(key)
        os.rmdir(fs)
        try:
            os.rename(upper, fs)
        except OSError:  # another filesystem (EXDEV), or a root dir the step gave away (rootless)
            os.mkdir(fs, 0o755)
            snaps.remove(key)
            return _applied(b, state, upper, skip, id_of)
        prefix = "trusted." if snaps.ownership == "unshifted" else "user."
        with phase("layer.walk"):
            res = _walk(b, fs, skip, id_of, prefix)
        if res is None:
            snaps.remove(key)
            return False
        blob, tmp = res
        b.ctx.held.add("content", blob.digest)
        with phase("layer.sync"):
            syncfs(fs)  # the layer's files and its blob, in one call
        b.ctx.images.content.adopt(tmp, blob.digest, synced=True)
        chain = b.chain(state, blob.diff_id)
        b.ctx.held.add("snapshot", chain)
        try:
            snaps.commit(chain, key, labels={"flex.dev/diff-id": blob.diff_id})
        except AlreadyExists:  # the same layer on the same parent (a reproducible rebuild)
            snaps.remove(key)
    except BaseException:
        with contextlib.suppress(Exception):
            snaps.remove(key)
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    b.append_layer(state, blob)
    return True


def _applied(b: Builder, state: State, upper: Path, skip: set[str], id_of: Callable[[int], int] | None) -> bool:
    """The copying way, for an upper dir the snapshots cannot take by rename: blob first, then applied."""
    res = _walk(b, upper, skip, id_of, None)
    if res is None:
        return False
    blob, tmp = res
    try:
        b.ctx.held.add("content", blob.digest)
        b.ctx.images.content.adopt(tmp, blob.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    b.unpack_blob(state, blob)
    return True
