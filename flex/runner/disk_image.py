"""A root runner's hard disk limit (issue 14): an environment's volume directory is an ext4 filesystem on a
sparse image of ``spec.resources.disk`` bytes, so a write past the limit gets ENOSPC.

    FLEX_HOME/runner/disks/<env id>.img    the image (sparse: the host pays only for blocks written)
    FLEX_HOME/runner/disks/<env id>.grow   present while a resize upward is under way (redone until gone)

The image holds everything under FLEX_HOME/runner/volumes/<env id>/: the workspace, the devcontainer's
``type=volume`` mounts and nested Docker's /var/lib/docker. The container's writable layer is not on it (the
runtime owns it); that one stays measured against the limit (disk.py, ``DiskPressure``).

Each step is safe to repeat and to cut with kill -9: the image is made under a temporary name and renamed
whole; "mounted" is read from /proc/self/mountinfo, never remembered, so after a runner restart or a reboot
the next reconcile mounts it again before anything uses the volume; a loop device left by a mount cut short
is detached before the next mount. Growing is online (resize2fs) where the runner has CAP_SYS_RESOURCE, else
offline once no container of the environment runs; ext4 cannot shrink while mounted, so a lower limit is not
applied to the image (``DiskImage.note`` says so) and is enforced softly instead.

The loop device does direct I/O on the image where the host's filesystem allows it: without it every block
is cached twice (the volume's page cache and the image file's) and a sync writes it twice, which made a
restore into a fresh volume (and any large write a user makes durable) about twice as slow.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from flex.atomic import fsync_dir, write_atomic
from flex.errors import FailedPrecondition

__all__ = ["DiskImage", "DiskImageError", "disk_image_path", "ensure_disk_image", "mount_disk_image",
           "remove_disk_image"]

# nodev, nosuid: as the container's binds of the volume are; discard: a file deleted inside punches its
# blocks out of the sparse image, so the host gets the space back
_MOUNT_OPTIONS = "loop,nodev,nosuid,discard"
# everything initialised now (free on a sparse file: mke2fs punches holes that read back as zeros), so no
# ext4lazyinit thread writes behind a user's back; -m 0: no blocks reserved for a root that is not there
_MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
_LOOP_SET_DIRECT_IO = 0x4C08  # linux/loop.h


class DiskImageError(FailedPrecondition):
    """A step on the image failed (the message says which, with the tool's own words)."""


@dataclass(frozen=True)
class DiskImage:
    path: Path
    size: int  # bytes the image has (its file size)
    device: str  # the loop device it is mounted from
    note: str = ""  # why it is not the size asked for (a lower limit, a grow waiting), or ""
    pending: bool = False  # a grow waits for the environment's container to stop


def disk_image_path(home: Path, env_id: str) -> Path:
    return home / "runner" / "disks" / f"{env_id}.img"


def ensure_disk_image(home: Path, env_id: str, volume: Path, size: int, *, in_use: bool) -> DiskImage | None:
    """The image of ``size`` bytes made, mounted on ``volume`` and grown to ``size`` if smaller; None when
    ``volume`` already holds files of its own (made before this runner had disk images: left as it is).
    ``in_use``: a container of the environment runs, so a grow that cannot be online waits for its stop."""
    img = disk_image_path(home, env_id)
    if not img.exists():
        if _mount_of(volume) is None and any(volume.iterdir()):
            return None
        _make(img, size)
    device = mount_disk_image(home, env_id, volume)
    assert device is not None
    have = img.stat().st_size
    grow = img.with_suffix(".grow")
    if have < size or grow.exists():
        # the marker first: a grow cut anywhere is finished by the next call
        want = max(size, have)
        write_atomic(grow, json.dumps({"size": want}), mode=0o600)
        os.truncate(img, want)
        _run(["losetup", "--set-capacity", device])
        try:
            _run(["resize2fs", device])
        except DiskImageError as err:
            # online resize is EXT4_IOC_RESIZE_FS, which needs CAP_SYS_RESOURCE; without it, offline
            if in_use:
                return DiskImage(img, want, device, f"grows to {want} bytes when the environment next stops "
                                 f"or starts (online: {err.message.splitlines()[-1]})", pending=True)
            device = _grow_offline(img, volume)
        grow.unlink()
        have = want
    note = ""
    if have > size:
        note = (f"spec.resources.disk asks for {size} bytes, but the disk image stays at {have}: ext4 cannot "
                "shrink while mounted, so the lower limit is enforced as a soft limit (DiskPressure)")
    return DiskImage(img, have, device, note)


def _grow_offline(img: Path, volume: Path) -> str:
    """Unmounted, checked (resize2fs insists), grown to the image's size, mounted again."""
    _umount(volume)
    _detach(img)
    _check(img)
    _run(["resize2fs", str(img)])
    device = _mount(img, volume)
    return device


def _check(img: Path) -> None:
    # e2fsck -p: 0 clean, 1 errors fixed; anything else needs a person
    r = subprocess.run(["e2fsck", "-f", "-p", str(img)], capture_output=True, text=True, timeout=600)
    if r.returncode not in (0, 1):
        raise DiskImageError(f"e2fsck -f -p {img} exited with {r.returncode}: {(r.stdout + r.stderr).strip()}")


def mount_disk_image(home: Path, env_id: str, volume: Path) -> str | None:
    """Mount the environment's image on ``volume`` unless it is already; returns the loop device, or None
    when the environment has no image."""
    img = disk_image_path(home, env_id)
    if not img.exists():
        return None
    mounted = _mount_of(volume)
    if mounted is not None:
        _direct_io(mounted)  # a mount by a runner from before direct I/O
        return mounted
    _detach(img)  # a loop device left by a mount cut short
    if img.with_suffix(".grow").exists():
        _check(img)  # a grow may have been cut (an offline resize2fs by a crash of the machine)
    return _mount(img, volume)


def _mount(img: Path, volume: Path) -> str:
    volume.mkdir(mode=0o711, parents=True, exist_ok=True)
    _run(["mount", "-t", "ext4", "-o", _MOUNT_OPTIONS, str(img), str(volume)])
    os.chmod(volume, 0o711)
    with contextlib.suppress(OSError):
        (volume / "lost+found").rmdir()  # not the user's; e2fsck makes it again should it need one
    device = _mount_of(volume)
    if device is None:
        raise DiskImageError(f"mounted {img} on {volume}, but /proc/self/mountinfo does not show it")
    _direct_io(device)
    return device


def _direct_io(device: str) -> None:
    """Direct I/O from ``device`` to its image; where the host's filesystem cannot (tmpfs, some FUSE
    filesystems: EINVAL), the device stays buffered, which is slower but as correct."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, _LOOP_SET_DIRECT_IO, 1)
    finally:
        os.close(fd)


def _umount(volume: Path) -> None:
    while _mount_of(volume) is not None:
        _run(["umount", str(volume)])


def remove_disk_image(home: Path, env_id: str, volume: Path) -> None:
    """Unmount ``volume``, detach the image's loop devices and remove the image: each step safe to repeat."""
    img = disk_image_path(home, env_id)
    while _mount_of(volume) is not None:
        r = subprocess.run(["umount", str(volume)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:  # busy: a process outside the container still has a file open in it
            _run(["umount", "--lazy", str(volume)])
    if img.exists():
        _detach(img)
    img.with_suffix(".grow").unlink(missing_ok=True)
    img.unlink(missing_ok=True)
    img.with_name(img.name + ".new").unlink(missing_ok=True)


def _make(img: Path, size: int) -> None:
    """A fresh ext4 image, made under ``<id>.img.new`` and renamed into place once complete."""
    img.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = img.with_name(img.name + ".new")
    tmp.unlink(missing_ok=True)  # cut short last time
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    _run([*_MKFS, "-L", f"flex-{img.stem}"[:16], str(tmp)])
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, img)
    fsync_dir(img.parent)


def _detach(img: Path) -> None:
    """Detach every loop device backed by ``img`` that nothing mounts here."""
    r = _run(["losetup", "--associated", str(img), "--noheadings", "--output", "NAME"])
    in_use = _mounted_devices()
    for dev in r.split():
        if dev not in in_use:
            subprocess.run(["losetup", "--detach", dev], capture_output=True, timeout=60)


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, source) of each mount of this mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) >= 5 and len(rest) >= 2:
            out.append((_unescape(fields[4]), rest[0], rest[1]))
    return out


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape").encode("latin-1").decode() if "\\" in field else field


def _mount_of(point: Path) -> str | None:
    """The loop device mounted on ``point`` (the topmost ext4 mount), or None."""
    dev = None
    for where, fstype, source in _mountinfo():
        if where == str(point):
            dev = source if fstype == "ext4" and source.startswith("/dev/loop") else None
    return dev


def _mounted_devices() -> set[str]:
    return {source for _, _, source in _mountinfo()}


def _run(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DiskImageError(f"{argv[0]}: {err}") from err
    if r.returncode != 0:
        raise DiskImageError(f"{' '.join(argv)} exited with {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout
