"""Restore: a snapshot into a new directory, built in a temp place and renamed when whole.

Imports nothing from flex but flex.errors. The tree is untrusted: every name is one checked path
component, every file is created with O_EXCL|O_NOFOLLOW relative to a directory descriptor we opened
ourselves, and symlinks are created but never followed, so nothing is written outside the target.
Device nodes are skipped unless ``allow_devices`` (a character device 0:0 — an overlay whiteout — is
always restored where the caller may create it). Every blob is authenticated and its keyed hash checked;
damaged data aborts the restore and removes the temp directory. A kill -9 leaves only a hidden
``.NAME.restore-PID-*`` directory beside the target, removed by the next restore there.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.backup.nodes import check_name
from flex.backup.repository import Repository, Snapshot
from flex.errors import AlreadyExists, FailedPrecondition, FlexError, InvalidArgument
from flex.pids import pid_alive

__all__ = ["RestoreSummary", "restore"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped_devices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_OVERLAY = ("trusted.overlay.", "user.overlay.")


class _Restorer:
    def __init__(self, repo: Repository, id_offset: int, allow_devices: bool, chown: bool,
                 overlay_xattrs: Mapping[str, str]):
        self.repo = repo
        self.id_offset = id_offset
        self.allow_devices = allow_devices
        self.chown = chown
        self.overlay_xattrs = overlay_xattrs
        self.overlay_ns = ""  # the namespace overlay xattrs are written in under the current root entry
        self.summary = RestoreSummary()
        self.links: dict[int, str] = {}
        self.root_fd = -1

    def _ids(self, node: dict[str, Any]) -> tuple[int, int]:
        return int(node.get("uid", 0)) + self.id_offset, int(node.get("gid", 0)) + self.id_offset

    def _meta(self, dfd: int, name: str, node: dict[str, Any], fd: int | None = None) -> None:
        kind = node["type"]
        target: int | str = fd if fd is not None else name
        kw: dict[str, Any] = {} if fd is not None else {"dir_fd": dfd, "follow_symlinks": False}
        if self.chown:
            uid, gid = self._ids(node)
            os.chown(target, uid, gid, **kw)
        path: int | str = fd if fd is not None else f"/proc/self/fd/{dfd}/{name}"
        for xname, value in (node.get("xattrs") or {}).items():
            if self.overlay_ns and xname.startswith(_OVERLAY):
                xname = f"{self.overlay_ns}.overlay.{xname.split('.overlay.', 1)[1]}"
            try:
                os.setxattr(path, xname, base64.b64decode(value), follow_symlinks=fd is not None)
            except OSError as err:
                self.summary.warnings.append(f"{name}: xattr {xname}: {err.strerror}")
        if kind != "symlink":
            os.chmod(target, int(node["mode"]) & 0o7777, **kw)  # after chown, which clears set-id bits
        os.utime(target, ns=(int(node["atime_ns"]), int(node["mtime_ns"])), **kw)

    def _file(self, dfd: int, name: str, node: dict[str, Any], rel: str) -> None:
        inode = node.get("inode")
        if isinstance(inode, int) and inode in self.links:
            os.link(self.links[inode], name, src_dir_fd=self.root_fd, dst_dir_fd=dfd, follow_symlinks=False)
            self.summary.files += 1
            return
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            size = int(node.get("size", 0))
            extents = node.get("extents") or ([[0, size]] if size else [])
            ext = iter(extents)
            pos, left = 0, 0
            for hexid in node.get("content", []):
                try:
                    data = memoryview(self.repo.load_blob(bytes.fromhex(hexid)))
                except FlexError as err:
                    raise type(err)(f"{err.message} (file {rel})", hint=err.hint) from None
                while data:
                    if left == 0:
                        try:
                            pos, left = next(ext)
                        except StopIteration:
                            raise FailedPrecondition(f"backup of {rel} holds more data than its size") from None
                    n = min(left, len(data))
                    os.pwrite(fd, data[:n], pos)
                    pos, left, data = pos + n, left - n, data[n:]
                    self.summary.bytes += n
            os.ftruncate(fd, size)
            self._meta(dfd, name, node, fd)
        finally:
            os.close(fd)
        if isinstance(inode, int):
            self.links[inode] = rel
        self.summary.files += 1

    def tree(self, dfd: int, tid: str, rel: str) -> None:
        seen: set[str] = set()
        for node in self.repo.load_tree(tid):
            name = check_name(node.get("name"), rel)
            if name in seen:
                raise FailedPrecondition(f"backup holds {rel}/{name} twice", hint="the backup is damaged or hostile")
            seen.add(name)
            if not rel:
                self.overlay_ns = self.overlay_xattrs.get(name, "")
            self.entry(dfd, name, node, f"{rel}/{name}" if rel else name)

    def entry(self, dfd: int, name: str, node: dict[str, Any], rel: str) -> None:
        kind = node.get("type")
        if kind == "dir":
            os.mkdir(name, 0o700, dir_fd=dfd)
            sub = os.open(name, _DIR, dir_fd=dfd)
            try:
                if node.get("subtree"):
                    self.tree(sub, str(node["subtree"]), rel)
                self._meta(dfd, name, node, sub)
            finally:
                os.close(sub)
            self.summary.dirs += 1
        elif kind == "file":
            self._file(dfd, name, node, rel)
        elif kind == "symlink":
            os.symlink(str(node["target"]), name, dir_fd=dfd)  # never followed by us
            self._meta(dfd, name, node)
        elif kind == "fifo":
            os.mkfifo(name, 0o600, dir_fd=dfd)
            self._meta(dfd, name, node)
        elif kind in ("chardev", "blockdev"):
            rdev = int(node.get("rdev", 0))
            if not self.allow_devices and not (kind == "chardev" and rdev == 0):
                self.summary.skipped_devices.append(rel)
                return
            mode = (stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK) | 0o600
            try:
                os.mknod(name, mode, rdev, dir_fd=dfd)
            except PermissionError:
                self.summary.skipped_devices.append(rel)
                return
            self._meta(dfd, name, node)
        else:
            self.summary.warnings.append(f"{rel}: {kind} not restored")


def _syncfs(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        os.sync()


def _clean_stale(target: Path) -> None:
    for p in target.parent.glob(f".{target.name}.restore-*"):
        with contextlib.suppress(ValueError, IndexError):
            if not pid_alive(int(p.name.rsplit(".restore-", 1)[1].split("-")[0])):
                shutil.rmtree(p, ignore_errors=True)


def restore(repo: Repository, snapshot: Snapshot, target: Path, *, id_offset: int = 0, allow_devices: bool = False,
            chown: bool | None = None, durable: bool = True, overlay_xattrs: Mapping[str, str] | None = None
            ) -> RestoreSummary:
    """Restore ``snapshot`` so that ``target`` (which must not exist) holds its root entries.

    ``id_offset`` is added to every stored uid and gid (the target's id range); owners are set only
    when running as root unless ``chown`` says otherwise. ``overlay_xattrs`` names root entries that are
    overlay upper dirs, each with the xattr namespace its overlay reads (``trusted``, or ``user`` inside a
    user namespace): their ``*.overlay.*`` xattrs (opaque directories, whiteouts) are written there, so a
    writable layer moves between a root and a rootless machine with its deleted directories still hidden."""
    bad = {k: v for k, v in (overlay_xattrs or {}).items() if v not in ("trusted", "user")}
    if bad:
        raise InvalidArgument(f"overlay xattrs of {', '.join(bad)}: {', '.join(map(str, bad.values()))} is not an "
                              "xattr namespace of overlay", hint="give trusted or user")
    target = target.absolute()
    if os.path.lexists(target):
        raise AlreadyExists(f"{target} exists", hint="restore into a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    tmp = target.parent / f".{target.name}.restore-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o700)
    r = _Restorer(repo, id_offset, allow_devices, os.geteuid() == 0 if chown is None else chown, overlay_xattrs or {})
    try:
        r.root_fd = os.open(tmp, _DIR)
        try:
            r.tree(r.root_fd, snapshot.tree, "")
            if durable:  # whole before it is visible: a crash after the rename must not leave empty files
                _syncfs(r.root_fd)
        finally:
            os.close(r.root_fd)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return r.summary
