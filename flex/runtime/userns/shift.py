"""A copy of a directory tree with every owner moved through an id map: what a rootless keep-id container
needs of its image layers (keep_id.py), made the way containers/storage makes one for a changed mapping.

Why a copy: on this kernel (tried on 6.1 and 6.18) an unprivileged user cannot idmap an ext4 directory (EPERM:
its superblock belongs to the initial user namespace), an overlay mount cannot be idmapped at all (EINVAL),
and overlay refuses ``metacopy=on`` with ``userxattr`` (a chown-only copy-up would have been cheap). So the
files are copied (data with copy_file_range) and chowned, as root in the keeper's namespace.

Kept exactly: types, modes (set-id bits put back after chown), hardlinks, symlinks, times, xattrs (the
``user.overlay.*`` opaque markers and whiteouts among them), whiteout devices 0/0, fifos. ids inside xattrs
move too: file capabilities get the new root as their v3 ``rootid`` (else ping's cap_net_raw is void in the
container), and POSIX ACL entries their new uid/gid. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from flex.errors import FailedPrecondition
from flex.runtime.base.syncfs import syncfs
from flex.runtime.userns.idmap import rootless_map

__all__ = ["SHIFTED_DIR", "copy_shifted", "remove_as_namespace_root"]

# beside a layer snapshot's fs/: its copies for keep-id maps (containers/shifted_layers.py); GC removes it
SHIFTED_DIR = "shifted"

IdFn = Callable[[int], int]
_CAPS = "security.capability"
_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
_REV_MASK, _V2, _V3 = 0xFF000000, 0x02000000, 0x03000000
_ACL_USER, _ACL_GROUP = 0x02, 0x08


def copy_shifted(src: Path, dst: Path, uid_of: IdFn, gid_of: IdFn) -> int:
    """Copy ``src`` to the new directory ``dst`` (which must not exist), owners through ``uid_of``/``gid_of``;
    synced to disk before it returns. Returns how many entries were copied."""
    copier = _Copier(uid_of, gid_of)
    copier.tree(str(src), str(dst), os.lstat(src))
    syncfs(dst)
    return copier.count


class _Copier:
    def __init__(self, uid_of: IdFn, gid_of: IdFn) -> None:
        self.uid_of, self.gid_of = uid_of, gid_of
        self.links: dict[tuple[int, int], str] = {}
        self.count = 0

    def tree(self, s: str, d: str, st: os.stat_result) -> None:
        os.mkdir(d, 0o700)
        with os.scandir(s) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            self.one(e.path, os.path.join(d, e.name), e.stat(follow_symlinks=False))
        self.meta(s, d, st)  # last: children change a directory's mtime

    def one(self, s: str, d: str, st: os.stat_result) -> None:
        self.count += 1
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.tree(s, d, st)
            return
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), d)
            if first != d:
                os.link(first, d)  # one inode: its owner and xattrs are set once
                return
        if stat.S_ISREG(mode):
            _copy_data(s, d)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            os.mknod(d, stat.S_IFCHR | 0o600, 0)  # an overlay whiteout (allowed in a user namespace)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, 0o600)
        else:
            return  # sockets; a rootless layer holds no other device nodes (tarsafe skips them)
        self.meta(s, d, st)

    def meta(self, s: str, d: str, st: os.stat_result) -> None:
        link = stat.S_ISLNK(st.st_mode)
        os.lchown(d, self.uid_of(st.st_uid), self.gid_of(st.st_gid))
        if not link:
            os.chmod(d, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits
        caps = None
        for name in _xattrs(s):
            try:
                value = os.getxattr(s, name, follow_symlinks=False)
            except OSError:
                continue
            if name == _CAPS:
                caps = _shift_caps(value, self.uid_of)
                continue
            if name in _ACLS:
                value = _shift_acl(value, self.uid_of, self.gid_of)
            os.setxattr(d, name, value, follow_symlinks=False)
        if caps is not None:
            os.setxattr(d, _CAPS, caps, follow_symlinks=False)  # last: chown and chmod drop capabilities
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise


def _copy_data(s: str, d: str) -> None:
    src = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                while os.copy_file_range(src, dst, 1 << 30):
                    pass
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                os.lseek(src, 0, os.SEEK_SET)
                os.lseek(dst, 0, os.SEEK_SET)
                os.ftruncate(dst, 0)
                with open(src, "rb", closefd=False) as fs, open(dst, "wb", closefd=False) as fd:
                    shutil.copyfileobj(fs, fd, 1 << 20)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _shift_caps(value: bytes, uid_of: IdFn) -> bytes:
    """A file capability as read here (v2: its root is ours; v3: rootid given) for the container root's new id:
    written as v3, the kernel reads the rootid in our namespace and stores the host id."""
    if len(value) < 20:
        return value
    magic = int.from_bytes(value[:4], "little")
    rev, body = magic & _REV_MASK, value[4:20]
    if rev == _V2:
        root = 0
    elif rev == _V3 and len(value) >= 24:
        root = int.from_bytes(value[20:24], "little")
    else:
        return value
    new, flags = uid_of(root), magic & ~_REV_MASK
    if new == 0:
        return (_V2 | flags).to_bytes(4, "little") + body
    return (_V3 | flags).to_bytes(4, "little") + body + new.to_bytes(4, "little")


def _shift_acl(value: bytes, uid_of: IdFn, gid_of: IdFn) -> bytes:
    if len(value) < 4 or (len(value) - 4) % 8:
        return value
    out = bytearray(value)
    for off in range(4, len(value), 8):
        tag = int.from_bytes(value[off:off + 2], "little")
        if tag in (_ACL_USER, _ACL_GROUP):
            old = int.from_bytes(value[off + 4:off + 8], "little")
            out[off + 4:off + 8] = (uid_of(old) if tag == _ACL_USER else gid_of(old)).to_bytes(4, "little")
    return bytes(out)


def remove_as_namespace_root(paths: Sequence[Path]) -> None:
    """``rm -rf`` of trees whose files belong to the caller's subuids (shifted copies: their directories are
    a subuid's, so the user may not empty them), as root of a one-shot namespace with the rootless map."""
    if not paths:
        return
    if os.geteuid() == 0:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
        return
    m = rootless_map()
    (_, su, nu), (_, sg, ng) = m.uids[1], m.gids[1]
    r = subprocess.run(["unshare", "--map-root-user", f"--map-users={su},1,{nu}", f"--map-groups={sg},1,{ng}",
                        "--", "rm", "-rf", "--one-file-system", "--", *map(str, paths)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/", timeout=3600)
    if r.returncode != 0:
        raise FailedPrecondition(f"removing {', '.join(map(str, paths))} in the user namespace failed: "
                                 f"{r.stderr.strip()}")
