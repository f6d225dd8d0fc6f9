"""A desktop runner's local folder (``spec.source.path``) on a root runner: its files keep their owner.

A root runner's container has its own id range (0 → 100000+), so a plain bind would show the folder's files
as nobody (65534) inside and refuse writes. Instead the folder is bind-mounted on
``FLEX_HOME/runner/mnt/<env id>/`` with an idmap (mount_setattr MOUNT_ATTR_IDMAP) that turns its owner into
the container's ``remoteUser`` (else ``containerUser``, else root): inside, the folder is theirs, and files
they make belong to the folder's owner outside, as podman's ``--userns=keep-id`` does rootless. Other owners'
files in the folder stay nobody inside. The container binds that mount point, so the idmapped mount is made
just before each start and detached just after (the container keeps its copy): nothing of it stays on the
host, and a kill -9 in between is undone by the next start or by delete. A filesystem without idmapped
mounts (NFS, FUSE) gets a plain bind and a condition saying so.

Rootless runners need none of this: the user's own id is the container's root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from pathlib import Path

from flex.errors import FailedPrecondition
from flex.runtime.userns.idmap import IdMap, idmapped_bind, userns_fd

__all__ = ["folder_mount_point", "mount_folder", "unmount_folder"]

_libc = ctypes.CDLL(None, use_errno=True)
_MS_BIND, _MS_REC, _MNT_DETACH = 0x1000, 0x4000, 2


def folder_mount_point(home: Path, env_id: str) -> Path:
    """Outside runner/volumes and runner/state, which delete removes with rm -rf: never a path under which
    the user's folder may be mounted."""
    return home / "runner" / "mnt" / env_id


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounted(point: Path) -> bool:
    # not os.path.ismount: a bind from the same filesystem has the same st_dev as its parent
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        return any(len(fields) > 4 and _unescape(fields[4]) == str(point) for fields in map(str.split, f))
    return False


def unmount_folder(point: Path) -> None:
    """Detach whatever is mounted on ``point`` (safe to repeat, also after a kill -9 left it mounted)."""
    for _ in range(8):
        if not _mounted(point):
            return
        _libc.umount2(os.fsencode(str(point)), _MNT_DETACH)


def mount_folder(folder: Path, point: Path, inside_uid: int, inside_gid: int, host_uid: int,
                 host_gid: int) -> str:
    """Mount ``folder`` on ``point``, its owner appearing as host ids ``host_uid``/``host_gid`` (the
    container's ``inside_uid``/``inside_gid``). Returns "" or, when only a plain bind was possible, why."""
    point.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    point.mkdir(mode=0o700, exist_ok=True)
    unmount_folder(point)
    st = folder.stat()
    ns = userns_fd(IdMap(uids=((st.st_uid, host_uid, 1),), gids=((st.st_gid, host_gid, 1),)))
    try:
        idmapped_bind(folder, point, ns)
        return ""
    except FailedPrecondition as err:
        why = f"{err.message}; its files show as nobody (65534) inside and uid {inside_uid} cannot write them"
    finally:
        os.close(ns)
    if _libc.mount(os.fsencode(str(folder)), os.fsencode(str(point)), None, _MS_BIND | _MS_REC, None) != 0:
        err_no = ctypes.get_errno()
        raise FailedPrecondition(f"bind-mounting {folder} on {point} failed: {os.strerror(err_no)}")
    return why
