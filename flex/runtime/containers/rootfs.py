"""A container's root filesystem: the image's read-only layers + a read-write upper dir, as an overlay.

The seam to the image store: an ``ImageSource`` resolves an image reference to its layer directories
(top first) and its config (Env, Entrypoint, Cmd, WorkingDir, User). ``DirectoryImages`` takes a plain
directory (``/path/to/rootfs`` or a directory holding ``rootfs/`` and an OCI image ``config.json``);
``images_adapter.py`` plugs in the snapshots of ``flex image``. Root runners idmap-mount each layer
directory (unshifted on disk) into the container's id range; rootless runners mount inside the user's
namespace, with layers shifted at unpack time. Any number of layers (base/overlayfs.py: a mount(2)
option page holds only ~59 absolute lower dirs). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flex.errors import FailedPrecondition, InvalidArgument, NotFound
from flex.runtime.base.overlayfs import mount_overlay
from flex.runtime.userns.idmap import IdMap, idmapped_bind, userns_fd
from flex.runtime.userns.keeper import Keeper

__all__ = ["DirectoryImages", "ImageConfig", "ImageSource", "ResolvedImage", "ensure_rootfs", "lookup_user",
           "mount_rootfs", "remove_in_namespace", "replace_upper", "unmount_rootfs", "user_ids"]


@dataclass
class ImageConfig:
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, data: dict[str, Any]) -> ImageConfig:
        c = data.get("config") or {}
        return cls(env=list(c.get("Env") or []), entrypoint=list(c.get("Entrypoint") or []),
                   cmd=list(c.get("Cmd") or []), working_dir=str(c.get("WorkingDir") or ""),
                   user=str(c.get("User") or ""))


@dataclass
class ResolvedImage:
    ref: str
    lowers: list[Path]  # top layer first
    config: ImageConfig
    snapshot: str | None = None  # the image store's top snapshot key, which the container holds (GC)


class ImageSource(Protocol):
    def resolve(self, ref: str) -> ResolvedImage: ...


class DirectoryImages:
    """Images that are plain directories on disk (development and tests; `--rootfs` in podman terms)."""

    def resolve(self, ref: str) -> ResolvedImage:
        path = Path(ref)
        if not path.is_absolute() or not path.is_dir():
            raise NotFound(f"image {ref!r} not found", hint="give an image name from `flex image ls`, "
                           "or the absolute path of a root filesystem directory")
        config = ImageConfig()
        if (path / "rootfs").is_dir():
            cfg = path / "config.json"
            if cfg.exists():
                try:
                    config = ImageConfig.from_oci(json.loads(cfg.read_text()))
                except (ValueError, AttributeError) as err:
                    raise InvalidArgument(f"{cfg}: not an OCI image config: {err}") from err
            path = path / "rootfs"
        if not config.cmd and not config.entrypoint:
            config.cmd = ["/bin/sh"]
        return ResolvedImage(ref=ref, lowers=[path], config=config)


_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def _mount(target: Path, lowers: Sequence[Path], upper: Path, work: Path, options: Sequence[str] = ()) -> None:
    try:
        mount_overlay(target, lowers, upper=upper, work=work, options=options)
    except OSError as err:
        raise FailedPrecondition(f"mounting the container's root filesystem on {target} failed: "
                                 f"{err.strerror or err}") from err


def _umount(target: Path) -> None:
    _libc.umount2(os.fsencode(target), _MNT_DETACH)


def mount_rootfs(cdir: Path, lowers: Sequence[Path], idmap: IdMap, keeper: Keeper | None, *,
                 upper_owner: tuple[int, int] | None = None, volatile: bool = False) -> Path:
    """Mount the container's overlay on ``cdir/rootfs`` and return that path. Rootless, ``upper_owner`` (keeper
    ids) owns the writable layer's top, which is the container's ``/``: its root's, when that is not the user
    (``--userns keep-id``). ``volatile`` (a --rm container as podman mounts one, a build's RUN step as buildah
    does): syncs inside are not passed on to the disk, nor is the upper dir's filesystem synced at unmount (a
    syncfs of the whole disk, slow when others write to it); after a crash the upper dir is not to be trusted.
    """
    upper, work, target = cdir / "upper", cdir / "work", cdir / "rootfs"
    for d in (upper, work, target):
        d.mkdir(exist_ok=True)
    extra = ("volatile",) if volatile else ()
    if keeper is not None:
        def mount() -> None:
            if upper_owner is not None:
                os.chown(upper, *upper_owner)
                os.chmod(upper, 0o755)
            _mount(target, lowers, upper, work, ("userxattr", *extra))

        keeper.call(mount, "mounting the overlay")
        return target
    os.chown(upper, idmap.host_uid(0), idmap.host_gid(0))
    os.chmod(upper, 0o755)
    ns = userns_fd(idmap)
    try:
        mapped = []
        for i, lower in enumerate(lowers):
            m = cdir / f"lower{i}"
            m.mkdir(exist_ok=True)
            idmapped_bind(lower, m, ns)
            mapped.append(m)
    finally:
        os.close(ns)
    _mount(target, mapped, upper, work, extra)
    return target


def ensure_rootfs(cdir: Path, idmap: IdMap, keeper: Keeper | None) -> None:
    """Before a start: mount the overlay again if it is gone, as after a machine restart or, rootless, a
    killed namespace keeper (whose mount namespace held it); the layers are the ones recorded at create."""
    def mounted() -> None:
        with os.scandir(cdir / "rootfs") as it:  # an unmounted mount point is the empty directory we made
            if next(it, None) is None:
                raise FileNotFoundError(f"{cdir / 'rootfs'} is not mounted")

    try:
        if keeper is not None:
            keeper.call(mounted, "looking at the root filesystem")
        else:
            mounted()
        return
    except (FailedPrecondition, OSError):
        pass
    try:
        recorded = json.loads((cdir / "image.json").read_text())
        lowers = [Path(p) for p in recorded["lowers"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FailedPrecondition(f"{cdir}: the container's image layers are not recorded ({err}); "
                                 "remove the container and create it again") from err
    if recorded.get("volatile"):  # its upper dir may have lost writes; overlayfs refuses it again anyway
        raise FailedPrecondition(f"{cdir}: the container's root filesystem was volatile and is unmounted",
                                 hint="remove the container and create it again")
    unmount_rootfs(cdir, keeper)  # what is left of it (a root runner's idmapped lower dirs)
    mount_rootfs(cdir, lowers, idmap, keeper)


def unmount_rootfs(cdir: Path, keeper: Keeper | None) -> None:
    """Undo mount_rootfs; safe to repeat, and after a crash at any point."""
    if keeper is not None:
        if keeper.running_pid() is not None:
            with contextlib.suppress(FailedPrecondition):
                keeper.call(lambda: _umount(cdir / "rootfs"), "unmounting the overlay")
        return
    _umount(cdir / "rootfs")
    for m in sorted(cdir.glob("lower*")):
        _umount(m)


def remove_in_namespace(cdir: Path, keeper: Keeper) -> None:
    """Rootless: unmount the overlay and remove the container's directory (its upper dir holds files of the
    user's subordinate ids) in one child in the user's namespace: one fork on the --rm path, not two."""
    def unmount_and_remove() -> None:
        _umount(cdir / "rootfs")
        shutil.rmtree(cdir)

    keeper.call(unmount_and_remove, "removing the container's files")


def lookup_user(lowers: Sequence[Path], user: str) -> tuple[int, int, list[int]]:
    """uid, gid and supplementary gids for ``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``)
    from the image's /etc/passwd and /etc/group."""
    if not user:
        return 0, 0, []

    def read(rel: str) -> str | None:
        for lower in lowers:
            p = lower / rel
            # never follow a symlink out of the image: /etc/passwd is untrusted input
            if p.is_symlink() or not p.is_file():
                continue
            with contextlib.suppress(OSError):
                return p.read_text(errors="replace")
        return None

    return user_ids(user, read("etc/passwd"), read("etc/group"), where="the image's")


def user_ids(user: str, passwd_text: str | None, group_text: str | None, *,
             where: str) -> tuple[int, int, list[int]]:
    """``lookup_user`` on the text of an /etc/passwd and /etc/group (``where`` they are, for errors)."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd, groups = ([line.split(":") for line in (text or "").splitlines() if ":" in line]
                      for text in (passwd_text, group_text))
    uid = gid = -1
    uname = ""
    if name.isdigit():
        uid = int(name)
        for row in passwd:
            if len(row) > 3 and row[2] == name:
                gid, uname = int(row[3]), row[0]
                break
        else:
            gid = uid if not group else -1
    else:
        for row in passwd:
            if len(row) > 3 and row[0] == name:
                uid, gid, uname = int(row[2]), int(row[3]), name
                break
        else:
            raise InvalidArgument(f"user {shlex.quote(name)} not found in {where} /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for row in groups:
                if len(row) > 2 and row[0] == group:
                    gid = int(row[2])
                    break
            else:
                raise InvalidArgument(f"group {shlex.quote(group)} not found in {where} /etc/group")
    extra = []
    if uname:
        for row in groups:
            if len(row) > 3 and uname in row[3].split(",") and row[2].isdigit():
                extra.append(int(row[2]))
    return uid, gid if gid >= 0 else uid, extra


def replace_upper(cdir: Path, new_upper: Path, keeper: Keeper | None = None) -> None:
    """A created, never started container's writable layer becomes ``new_upper`` (a restored one, owned in the
    container's range already): the overlay is unmounted, the upper dir swapped, and the overlay mounted
    again on the same lowers — rootless all of it as root in the keeper's namespaces, whose overlay it is."""
    upper, work, target = cdir / "upper", cdir / "work", cdir / "rootfs"
    if keeper is not None:
        try:
            lowers_ = [Path(p) for p in json.loads((cdir / "image.json").read_text())["lowers"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FailedPrecondition(f"{cdir}: the container's image layers are not recorded ({err})") from err

        def swap() -> None:
            _umount(target)
            old = cdir / "upper.old"
            if upper.exists():  # else a swap cut short after this rename: the old one is aside already
                upper.rename(old)
            new_upper.rename(upper)
            for d in (old, work):
                shutil.rmtree(d, ignore_errors=True)
            work.mkdir()
            _mount(target, lowers_, upper, work, ("userxattr",))

        keeper.call(swap, "placing the restored writable layer")
        return
    lowers = sorted((p for p in cdir.iterdir() if p.name.startswith("lower") and p.name[5:].isdigit()),
                    key=lambda p: int(p.name[5:]))
    if not lowers:
        raise FailedPrecondition(f"{cdir}: no idmapped lower layers to mount again (a rootless container?)")
    st = upper.stat()
    _umount(target)
    os.chown(new_upper, st.st_uid, st.st_gid)
    os.chmod(new_upper, 0o755)
    old = cdir / "upper.old"
    upper.rename(old)
    new_upper.rename(upper)
    for d in (old, work):
        shutil.rmtree(d)
    work.mkdir()
    _mount(target, lowers, upper, work)
