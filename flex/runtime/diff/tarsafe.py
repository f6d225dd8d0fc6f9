"""Apply one untrusted layer tar to a snapshot directory, never touching anything outside it.

tarfile is used only to parse headers; nothing is extracted through it (its filters had bypasses
before 2025 and 3.11.7 predates the fixes). Every path is resolved here component by component from
an open directory fd of the snapshot root, never following a symlink: an absolute name (or hardlink
target) is taken relative to that root, as Docker and containerd do; one with a ``..`` component is
refused, as is one whose parent is a symlink (symlink-then-write, in this
layer or in a lower one) and a hardlink whose target is outside, missing or a directory. Device nodes
are skipped with a warning unless we are real root. Overlay xattrs in a layer are never copied (they
would let a layer redirect lookups). OCI whiteouts become overlay whiteouts (0/0 char devices, or the
xattr form where mknod is denied) and opaque markers become the ``overlay.opaque`` xattr, so the
directory can be used directly as an overlay lower dir. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from flex.errors import InvalidArgument

__all__ = ["LayerStats", "UnsafeLayer", "apply_tar"]

_WH = ".wh."
_OPQ = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY = 1 << 20
_MAX_OPEN_DIRS = 256


class UnsafeLayer(InvalidArgument):
    """A layer entry tried to escape its snapshot or is otherwise malformed."""


@dataclass
class LayerStats:
    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0
    whiteout_form: str = ""  # "chardev" or "xattr" if any whiteout was written
    warnings: list[str] = field(default_factory=list)


def _split(name: str, what: str) -> list[str]:
    # a leading "/" means the snapshot root, as Docker and containerd read it (both join the name
    # onto the root; some tools write "/etc/passwd" for "etc/passwd")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer entry {what} {name!r} contains '..'")
    if any("\0" in p for p in parts):
        raise UnsafeLayer(f"layer entry {what} {name!r} contains a NUL byte")
    return parts


class _Tree:
    """The snapshot directory, with every lookup relative to a root fd and no symlink following."""

    def __init__(self, root: Path, lowers: Sequence[Path], xattr_prefix: str, real_root: bool):
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.lowers = list(lowers)
        self.prefix = xattr_prefix  # "trusted." as real root, "user." inside a user namespace
        self.real_root = real_root
        self._fds: dict[tuple[str, ...], int] = {(): self.root_fd}

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}

    def _forget(self, parts: Sequence[str]) -> None:
        key = tuple(parts)
        for k in [k for k in self._fds if k[:len(key)] == key and k]:
            os.close(self._fds.pop(k))

    def lower_lstat(self, parts: Sequence[str]) -> tuple[os.stat_result, Path] | None:
        """What the lower layers (top first) show at ``parts``: stat and path, None if absent/whited out.
        As overlayfs looks it up: a whiteout (either form) on the way hides the name, and an opaque
        directory on the way, at any depth, hides every layer below it. Lowers were written by this
        module (or another tool), yet intermediate symlinks are still not followed."""
        for lower in self.lowers:
            cur = lower
            hides_below = self._opaque(cur) == b"y"
            for i, comp in enumerate(parts):
                cur = cur / comp
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if self._is_whiteout(cur, st):
                    return None
                if i == len(parts) - 1:
                    return st, cur
                if not stat.S_ISDIR(st.st_mode):
                    return st, cur  # a non-directory shadows what is below; caller checks the kind
                hides_below = hides_below or self._opaque(cur) == b"y"
            if hides_below:
                return None
        return None

    def _opaque(self, path: Path) -> bytes | None:
        try:
            return os.getxattr(path, self.prefix + "overlay.opaque", follow_symlinks=False)
        except OSError:
            return None

    def _is_whiteout(self, path: Path, st: os.stat_result) -> bool:
        """A 0/0 char device, or (overlayfs 6.7+) an empty regular file with ``overlay.whiteout``. The
        kernel's lookup honours the latter whatever its directory says (only readdir needs the
        directory's ``overlay.opaque=x``), so neither do we ask."""
        if stat.S_ISCHR(st.st_mode):
            return st.st_rdev == 0
        if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
            return False
        try:
            os.getxattr(path, self.prefix + "overlay.whiteout", follow_symlinks=False)
        except OSError:
            return False
        return True

    def dir_fd(self, parts: Sequence[str], *, create: bool, name: str) -> int:
        """An fd of directory ``parts``, creating missing ones (metadata copied from a lower dir)."""
        key = tuple(parts)
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], create=create, name=name)
        comp = parts[-1]
        try:
            st = os.stat(comp, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None:
            lower = self.lower_lstat(parts)
            if lower is not None and not stat.S_ISDIR(lower[0].st_mode):
                kind = "a symlink" if stat.S_ISLNK(lower[0].st_mode) else "not a directory"
                raise UnsafeLayer(f"layer entry {name!r}: parent {'/'.join(parts)!r} is {kind} in a lower layer")
            if not create:
                raise FileNotFoundError(errno.ENOENT, "/".join(parts))
            os.mkdir(comp, 0o755, dir_fd=parent)
            if lower is not None:
                lst = lower[0]
                with contextlib.suppress(OSError):
                    os.chown(comp, lst.st_uid, lst.st_gid, dir_fd=parent, follow_symlinks=False)
                os.chmod(comp, stat.S_IMODE(lst.st_mode), dir_fd=parent, follow_symlinks=True)
        elif stat.S_ISLNK(st.st_mode):
            raise UnsafeLayer(f"layer entry {name!r}: parent {'/'.join(parts)!r} is a symlink (refusing to "
                              "write through it)")
        elif not stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"layer entry {name!r}: parent {'/'.join(parts)!r} is not a directory")
        fd = os.open(comp, _DIR_FLAGS, dir_fd=parent)
        if len(self._fds) > _MAX_OPEN_DIRS:
            self._forget_all_but(parts)
        self._fds[key] = fd
        return fd

    def _forget_all_but(self, keep: Sequence[str]) -> None:
        protected = {tuple(keep[:i]) for i in range(len(keep) + 1)}
        for k in [k for k in self._fds if k not in protected]:
            os.close(self._fds.pop(k))

    def clear(self, parent: int, parts: Sequence[str], *, keep_dir: bool) -> bool:
        """Remove what is at ``parts`` in this layer; True if a directory was kept."""
        comp = parts[-1]
        try:
            st = os.stat(comp, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._forget(parts)
            shutil.rmtree(comp, dir_fd=parent)
        else:
            os.unlink(comp, dir_fd=parent)
        return False


def apply_tar(root: Path, stream: BinaryIO, *, lowers: Sequence[Path] = (), userns: bool = False) -> LayerStats:
    """Apply the (uncompressed) tar ``stream`` to the empty directory ``root``; ``lowers`` are the parent
    snapshot directories, top first. ``userns`` selects user.* overlay xattrs (we run in a user
    namespace); otherwise trusted.* (real root)."""
    real_root = os.geteuid() == 0 and not userns
    tree = _Tree(root, lowers, "user." if userns else "trusted.", real_root)
    stats = LayerStats()
    dir_times: list[tuple[list[str], int]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tf:
            for member in tf:
                stats.entries += 1
                _apply_member(tree, tf, member, stats, dir_times)
            # read to the end so the caller's digest covers the whole stream
            while stream.read(_COPY):
                pass
        for parts, mtime in reversed(dir_times):
            with contextlib.suppress(OSError, UnsafeLayer):
                parent = tree.dir_fd(parts[:-1], create=False, name="/".join(parts)) if parts else None
                if parent is None:
                    os.utime(tree.root_fd, ns=(mtime, mtime))
                else:
                    os.utime(parts[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
    except tarfile.TarError as err:
        raise InvalidArgument(f"layer is not a valid tar archive: {err}") from err
    finally:
        tree.close()
    return stats


def _apply_member(tree: _Tree, tf: tarfile.TarFile, m: tarfile.TarInfo, stats: LayerStats,
                  dir_times: list[tuple[list[str], int]]) -> None:
    parts = _split(m.name, "")
    mtime = int(m.mtime * 1_000_000_000) if m.mtime else 0
    if not parts:  # the root directory itself
        if m.isdir():
            _set_owner_mode(tree, tree.root_fd, None, m, stats)
            dir_times.append(([], mtime))
        return
    base = parts[-1]
    if base.startswith(_WH):
        parent = tree.dir_fd(parts[:-1], create=True, name=m.name)
        if base == _OPQ:
            os.setxattr(parent, tree.prefix + "overlay.opaque", b"y")
            return
        target = base[len(_WH):]
        if target in ("", ".", "..") or target.startswith(_WH):
            raise UnsafeLayer(f"layer entry {m.name!r} is a malformed whiteout")
        tree.clear(parent, [*parts[:-1], target], keep_dir=False)
        _whiteout(tree, parent, target, stats)
        return
    parent = tree.dir_fd(parts[:-1], create=True, name=m.name)
    if m.isdir():
        if not tree.clear(parent, parts, keep_dir=True):
            os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            _set_owner_mode(tree, fd, None, m, stats)
        finally:
            os.close(fd)
        dir_times.append((parts, mtime))
        return
    if m.islnk():
        _hardlink(tree, parent, parts, m, stats)
        return
    tree.clear(parent, parts, keep_dir=False)
    if m.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = tf.extractfile(m)
            if src is not None and m.size:
                remaining = m.size
                while remaining:
                    buf = src.read(min(_COPY, remaining))
                    if not buf:
                        raise InvalidArgument(f"layer entry {m.name!r} is truncated")
                    _write_all(fd, buf)
                    remaining -= len(buf)
                stats.bytes += m.size
            _set_owner_mode(tree, fd, None, m, stats)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        return
    if m.issym():
        os.symlink(m.linkname, base, dir_fd=parent)
    elif m.ischr() or m.isblk():
        if not tree.real_root:
            stats.warnings.append(f"skipped device node {m.name!r} (not allowed without root)")
            return
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
    elif m.isfifo():
        os.mkfifo(base, 0o600, dir_fd=parent)
    else:
        stats.warnings.append(f"skipped layer entry {m.name!r} of unsupported type {m.type!r}")
        return
    _set_owner_mode(tree, None, (parent, base), m, stats)
    os.utime(base, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _whiteout(tree: _Tree, parent: int, name: str, stats: LayerStats) -> None:
    stats.whiteouts += 1
    try:
        os.mknod(name, stat.S_IFCHR | 0o600, 0, dir_fd=parent)
        stats.whiteout_form = stats.whiteout_form or "chardev"
        return
    except PermissionError:
        pass
    # overlayfs (6.7+) also reads a zero-size file with overlay.whiteout, in a dir marked opaque=x
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
    try:
        os.setxattr(fd, tree.prefix + "overlay.whiteout", b"y")
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        if os.getxattr(parent, tree.prefix + "overlay.opaque") == b"y":
            return
    os.setxattr(parent, tree.prefix + "overlay.opaque", b"x")
    stats.whiteout_form = "xattr"


def _hardlink(tree: _Tree, parent: int, parts: list[str], m: tarfile.TarInfo, stats: LayerStats) -> None:
    tparts = _split(m.linkname, "hardlink target")
    if not tparts:
        raise UnsafeLayer(f"layer entry {m.name!r} is a hardlink to the root directory")
    if tparts == parts:
        return
    try:
        tparent = tree.dir_fd(tparts[:-1], create=False, name=m.name)
        st = os.stat(tparts[-1], dir_fd=tparent, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"layer entry {m.name!r} is a hardlink to a directory")
        tree.clear(parent, parts, keep_dir=False)
        os.link(tparts[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        return
    lower = tree.lower_lstat(tparts)
    if lower is None or not stat.S_ISREG(lower[0].st_mode):
        raise UnsafeLayer(f"layer entry {m.name!r} is a hardlink to {m.linkname!r}, which does not exist "
                          "in the image")
    # a link to a file of a lower layer: copy it up (a hardlink cannot cross snapshot directories)
    lst, lpath = lower
    tree.clear(parent, parts, keep_dir=False)
    src = os.open(lpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        try:
            while os.sendfile(dst, src, None, _COPY) > 0:
                pass
            with contextlib.suppress(OSError):
                os.fchown(dst, lst.st_uid, lst.st_gid)
            os.fchmod(dst, stat.S_IMODE(lst.st_mode))
            os.utime(dst, ns=(lst.st_atime_ns, lst.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    stats.warnings.append(f"hardlink {m.name!r} → {m.linkname!r} in a lower layer was copied")


def _set_owner_mode(tree: _Tree, fd: int | None, at: tuple[int, str] | None, m: tarfile.TarInfo,
                    stats: LayerStats) -> None:
    """chown, then chmod (chown clears setuid/setgid), then xattrs; symlinks get owner and xattrs only."""
    try:
        if fd is not None:
            os.fchown(fd, m.uid, m.gid)
        elif at is not None:
            os.chown(at[1], m.uid, m.gid, dir_fd=at[0], follow_symlinks=False)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EPERM):
            raise
        raise InvalidArgument(f"layer entry {m.name!r} is owned by {m.uid}:{m.gid}, which this runner cannot "
                              "represent", hint="rootless runners map 65536 ids; check /etc/subuid") from err
    if fd is not None:
        os.fchmod(fd, stat.S_IMODE(m.mode) | (m.mode & 0o7000))
    elif at is not None and not m.issym():
        _chmod_at(at[0], at[1], m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        xname = key[len("SCHILY.xattr."):]
        if xname.split(".", 1)[-1].startswith("overlay."):
            stats.warnings.append(f"ignored overlay xattr {xname} on {m.name!r}")
            continue
        raw = value.encode("utf-8", "surrogateescape")
        try:
            if fd is not None:
                os.setxattr(fd, xname, raw)
            elif at is not None:
                os.setxattr(f"/proc/self/fd/{at[0]}/{at[1]}", xname, raw, follow_symlinks=False)
        except OSError as err:
            stats.warnings.append(f"could not set xattr {xname} on {m.name!r}: {err.strerror}")


def _chmod_at(dirfd: int, name: str, mode: int) -> None:
    """fchmodat without following a symlink: open the (non-symlink) node by O_PATH and chmod via /proc."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
