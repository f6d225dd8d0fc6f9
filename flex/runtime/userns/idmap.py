"""User-namespace id maps: what a container's ids 0..65535 are on the host, and idmapped mounts.

Two modes (docs/rootless.md):
  * root runner: a container gets its own 65536-id range from the pool (idpool.py); image layers are
    unpacked unshifted and their directories are idmapped-mounted (mount_setattr MOUNT_ATTR_IDMAP) so an
    overlay on top of them shows the right owners inside.
  * rootless: container root = the calling user, ids 1..65536 = the user's /etc/subuid range, through
    newuidmap/newgidmap. Image files are shifted at unpack time (see userns.py).

Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from flex.errors import FailedPrecondition

__all__ = ["IdMap", "SubIdRange", "all_subid_ranges", "idmapped_bind", "read_subids", "rootless_map", "userns_fd"]

RANGE_SIZE = 65536


@dataclass(frozen=True)
class SubIdRange:
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True)
class IdMap:
    """OCI-style id mappings: lists of (container_id, host_id, size)."""

    uids: tuple[tuple[int, int, int], ...]
    gids: tuple[tuple[int, int, int], ...]

    @classmethod
    def single_range(cls, base: int, size: int = RANGE_SIZE) -> IdMap:
        return cls(uids=((0, base, size),), gids=((0, base, size),))

    def host_uid(self, uid: int) -> int:
        for inside, outside, size in self.uids:
            if inside <= uid < inside + size:
                return outside + uid - inside
        raise FailedPrecondition(f"uid {uid} is not mapped in this container")

    def host_gid(self, gid: int) -> int:
        for inside, outside, size in self.gids:
            if inside <= gid < inside + size:
                return outside + gid - inside
        raise FailedPrecondition(f"gid {gid} is not mapped in this container")

    def to_oci(self) -> dict[str, list[dict[str, int]]]:
        def conv(rows: tuple[tuple[int, int, int], ...]) -> list[dict[str, int]]:
            return [{"containerID": a, "hostID": b, "size": c} for a, b, c in rows]
        return {"uidMappings": conv(self.uids), "gidMappings": conv(self.gids)}

    def proc_lines(self, which: str) -> str:
        rows = self.uids if which == "uid" else self.gids
        return "".join(f"{a} {b} {c}\n" for a, b, c in rows)


def read_subids(path: Path, user: str | None, uid: int | None) -> list[SubIdRange]:
    """The ranges /etc/subuid (or /etc/subgid) gives ``user`` (by name or numeric id); every range when
    ``user`` is None. Malformed lines and comments are skipped, as shadow-utils skips them."""
    out: list[SubIdRange] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or line.lstrip().startswith("#") or not (parts[1].isdigit() and parts[2].isdigit()):
            continue
        if user is None or parts[0] in (user, str(uid)):
            out.append(SubIdRange(int(parts[1]), int(parts[2])))
    return out


def all_subid_ranges() -> list[SubIdRange]:
    """Every range handed out in /etc/subuid and /etc/subgid (the root pool must never overlap them)."""
    return [r for f in (Path("/etc/subuid"), Path("/etc/subgid")) for r in read_subids(f, None, None)]


def rootless_map() -> IdMap:
    """Container root = the calling user; 1..N = the user's first subordinate range (capped at 65536)."""
    uid, gid = os.getuid(), os.getgid()
    name = pwd.getpwuid(uid).pw_name
    subu = read_subids(Path("/etc/subuid"), name, uid)
    subg = read_subids(Path("/etc/subgid"), name, uid)
    if not subu or not subg:
        raise FailedPrecondition(
            f"user {name!r} has no subordinate id range in /etc/subuid and /etc/subgid",
            hint=f"as root: installer/install.sh --user {name} (it picks a range no other user holds)",
        )
    nu, ng = min(subu[0].count, RANGE_SIZE), min(subg[0].count, RANGE_SIZE)
    return IdMap(uids=((0, uid, 1), (1, subu[0].start, nu)), gids=((0, gid, 1), (1, subg[0].start, ng)))


# --- idmapped mounts (root only): open_tree + mount_setattr + move_mount, x86_64/aarch64 numbers ---------

_SYS = {"x86_64": (428, 429, 442), "aarch64": (428, 429, 442)}
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_AT_FDCWD = -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x100000
_CLONE_NEWUSER = 0x10000000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(nr: int, *args: object) -> int:
    rv = int(_libc.syscall(ctypes.c_long(nr), *args))
    if rv < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rv


def userns_fd(idmap: IdMap) -> int:
    """An fd of a fresh user namespace carrying ``idmap`` (root only), for MOUNT_ATTR_IDMAP.

    A forked child unshares a user namespace and waits; we write its maps, open its ns file (the fd
    keeps the namespace alive) and let it go. Cheaper than exec'ing unshare(1) on the start path.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, only syscalls
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = _libc.unshare(_CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise FailedPrecondition("could not create a user namespace for an idmapped mount")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(idmap.proc_lines("uid"))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(idmap.proc_lines("gid"))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def idmapped_bind(source: Path, target: Path, ns_fd: int) -> None:
    """Bind-mount ``source`` on ``target`` with ids shifted through the user namespace ``ns_fd``."""
    nums = _SYS.get(os.uname().machine)
    if nums is None:
        raise FailedPrecondition(f"idmapped mounts are not supported on {os.uname().machine}")
    open_tree, move_mount, mount_setattr = nums
    try:
        tree = _syscall(open_tree, ctypes.c_int(_AT_FDCWD), os.fsencode(source),
                        ctypes.c_uint(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC))
    except OSError as err:
        raise FailedPrecondition(f"open_tree({source}) failed: {err.strerror}") from err
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, ns_fd)
        try:
            _syscall(mount_setattr, ctypes.c_int(tree), b"", ctypes.c_uint(_AT_EMPTY_PATH),
                     ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
        except OSError as err:
            raise FailedPrecondition(
                f"idmapped mount of {source} failed: {err.strerror}",
                hint="the filesystem must support idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux >= 5.19)",
            ) from err
        _syscall(move_mount, ctypes.c_int(tree), b"", ctypes.c_int(_AT_FDCWD), os.fsencode(target),
                 ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
    finally:
        os.close(tree)
