"""Creating a container: options → a DB record, an id range, an overlay rootfs, a network and config.json.

Order matters for crash safety: the record (state ``creating`` + creator pid) is written first, in the
same transaction as the id range; every later step leaves files under the container's own directory, so
GC (containers.py) can undo a creation killed at any point. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flex.atomic import write_atomic
from flex.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, UsageError
from flex.runtime.cgroups import cgroups
from flex.runtime.containers.binds import resolve_bind
from flex.runtime.containers.rootfs import ImageSource, ResolvedImage, lookup_user, mount_rootfs
from flex.runtime.containers.shifted_layers import shifted_lowers
from flex.runtime.containers.store import Container, Containers
from flex.runtime.oci import spec
from flex.runtime.userns.idmap import IdMap
from flex.runtime.userns.keep_id import KeepId, parse_userns

__all__ = ["DEFAULT_PIDS_LIMIT", "INIT_BINARIES", "CreateOptions", "create_container", "parse_labels"]

INIT_BINARIES = ("/usr/bin/tini-static", "/usr/lib/podman/catatonit", "/usr/libexec/podman/catatonit")
DEFAULT_PIDS_LIMIT = 4096
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,252}")


def parse_labels(items: list[str]) -> dict[str, str]:
    """``--label K=V`` (repeatable; ``--label K`` means an empty value, as podman does)."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(f"--label {item!r}: the key must be letters, digits, '_', '.', '/', '-'",
                                  hint="e.g. --label flex.dev/environment=env_123")
        if len(value) > 4096:
            raise InvalidArgument(f"--label {key}: the value is longer than 4096 characters")
        out[key] = value
    return out


@dataclass
class CreateOptions:
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    volumes: list[str] = field(default_factory=list)
    net: str = "none"
    publish: list[str] = field(default_factory=list)
    allow_host_network: bool = False
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None
    docker: bool = False
    no_new_privileges: bool = False  # off by default, as in Docker and podman: sudo must work
    tty: bool = False
    interactive: bool = False
    auto_remove: bool = False
    entrypoint: list[str] | None = None
    init: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    userns: str | None = None  # "keep-id[:uid=U,gid=G]" (rootless only; kept normalised with both ids)
    # the root filesystem's syncs are skipped (overlay ``volatile``, as buildah mounts its RUN steps): for a
    # container whose changes are thrown away, or made durable by the caller (a build syncs a step's layer)
    volatile: bool = False


def _env_merge(image_env: list[str], extra: list[str], tty: bool = False) -> list[str]:
    out: dict[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    if tty:  # a terminal says what it is: the caller's, else xterm as Docker sets it; image or -e may override
        out["TERM"] = os.environ.get("TERM") or "xterm"
    for item in [*image_env, *extra]:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"-e {item!r}: expected KEY=VALUE")
        if not sep:  # -e KEY: take it from our own environment, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return [f"{k}={v}" for k, v in out.items()]


def _init_binary() -> Path | None:
    for p in INIT_BINARIES:
        if os.access(p, os.X_OK):
            return Path(p)
    return None


def create_container(store: Containers, images: ImageSource, opts: CreateOptions) -> Container:
    if opts.name is not None and not _NAME.fullmatch(opts.name):
        raise InvalidArgument(f"--name {opts.name!r}: use letters, digits, '_', '.', '-' (max 128)")
    parse_labels([f"{k}={v}" for k, v in opts.labels.items()])  # the same rules for API callers
    if opts.net not in ("none", "private", "host"):
        raise InvalidArgument(f"--net {opts.net!r}: expected none, private or host")
    # a default pids limit: a fork bomb in one container must not take the host down
    limits = cgroups.Limits(cpus=opts.cpus, memory=opts.memory, pids=opts.pids or DEFAULT_PIDS_LIMIT)
    cg_parent = store.cgroup_parent()
    if cg_parent is None and (opts.cpus or opts.memory or opts.pids or opts.docker):
        raise FailedPrecondition(
            "resource limits and --docker need a cgroup delegated to you, and none is",
            hint="as root: flex runtime delegate-cgroups USER (or run on cgroup v2 with systemd Delegate=yes)")
    if opts.docker and not cgroups.is_v2():
        from flex.runtime.cgroups import release_agent  # (only here: it is not cheap to import)

        release_agent.require_fix()  # CVE-2022-0492: --docker on cgroup v1 is that exploit's configuration
    volumes = [resolve_bind(v) for v in opts.volumes]
    keep = parse_userns(opts.userns)
    if keep is not None:
        if not store.rootless:
            raise InvalidArgument(f"--userns {opts.userns}: keep-id is for rootless containers",
                                  hint="as root every container has its own id range; a runner idmaps a "
                                       "local folder instead")
        keep.inner(store.rootless_idmap())  # an id outside the container's range: said before anything is made
        opts.userns = keep.to_option()
        _check_reachable(store)
    if not store.rootless:
        _check_searchable(store)
    cid = os.urandom(16).hex()
    name = opts.name or f"flex-{cid[:12]}"
    if store.db.query_one("SELECT id FROM containers WHERE name = ?", (name,)) is not None:
        raise AlreadyExists(f"a container named {name!r} already exists", hint=f"flex runtime rm {name}")
    cgroup = f"{cg_parent}/{cid}" if cg_parent else None
    if cg_parent:
        cgroups.ensure_parent(cg_parent)
    bundle = store.bundle(cid)
    with store.creating():  # GC would sweep a creation in progress: it has no finished record yet
        for attempt in (1, 2):
            image: ResolvedImage = images.resolve(opts.image)
            try:
                # first: GC can undo the rest; it also leases the image's layers, if they still exist
                if keep is not None and image.snapshot is None:
                    raise InvalidArgument(f"--userns keep-id: {opts.image} is a root filesystem directory",
                                          hint="use an image from the image store (flex image ls): its layers "
                                               "are copied once with owners for the map")
                idmap = _record(store, cid, name, opts, cgroup, bundle, image.snapshot, keep)
                break
            except _ImageGone:
                if attempt == 2:
                    raise NotFound(f"image {opts.image!r} was removed while the container was being created",
                                   hint="pull or build it again") from None
        return _create(store, cid, name, opts, image, volumes, limits, cgroup, bundle, idmap, keep)


class _ImageGone(Exception):
    """The resolved image's layers were collected before the container's lease could hold them."""


def _create(store: Containers, cid: str, name: str, opts: CreateOptions, image: ResolvedImage,
            volumes: list[tuple[Path, str, bool]], limits: cgroups.Limits, cgroup: str | None,
            bundle: Path, idmap: IdMap, keep: KeepId | None) -> Container:
    try:
        _make_bundle(store, bundle, idmap)
        lowers, inner, root = list(image.lowers), None, None
        if keep is not None:
            assert store.keeper is not None
            inner = keep.inner(store.rootless_idmap())
            lowers = shifted_lowers(image.lowers, keep, inner, store.keeper)
            root = (inner.host_uid(0), inner.host_gid(0))  # the keeper's ids of the container's root
        volatile = opts.volatile or opts.auto_remove
        (bundle / "image.json").write_text(json.dumps({"ref": image.ref, "lowers": [str(p) for p in lowers],
                                                       "volatile": volatile}))
        rootfs = mount_rootfs(bundle, lowers, idmap, store.keeper, upper_owner=root, volatile=volatile)
        store.mounted_here.add(cid)
        cfg = image.config
        args = (opts.entrypoint if opts.entrypoint is not None else cfg.entrypoint) + (opts.command or (
            cfg.cmd if opts.entrypoint is None else []))
        if not args:
            raise UsageError(f"image {opts.image} has no command; give one after the image name")
        uid, gid, extra = lookup_user(image.lowers, opts.user if opts.user is not None else cfg.user)
        s = spec.default_spec(args, rootfs=rootfs, hostname=name[:63], env=_env_merge(cfg.env, opts.env, opts.tty),
                              cwd=opts.workdir or cfg.working_dir or "/", uid=uid, gid=gid,
                              additional_gids=extra, terminal=opts.tty)
        s = spec.with_rootless(s, store.rootless_idmap(), inner) if store.rootless else spec.with_idmap(s, idmap)
        if opts.no_new_privileges:
            s = spec.with_no_new_privileges(s)
        if opts.init and (init := _init_binary()) is not None:
            s = spec.with_init(s, init)
        for src, dst, ro in volumes:
            s = spec.with_bind(s, src, dst, readonly=ro)
        if cgroup:
            s = spec.with_cgroup(s, cgroup)
            s = spec.with_resources(s, limits.to_oci())
        if opts.docker:
            s = spec.with_docker(s)
        if not store.runtime.binary.endswith("crun"):
            if opts.docker:
                raise FailedPrecondition("--docker needs crun (runc cannot give the container a fresh sysfs here)",
                                         hint="apt-get install crun")
            s = spec.with_runc_compat(s)
        s = _with_network(store, cid, name, opts, s)
        # not durable: a create cut short by a crash is removed by gc, never resumed
        write_atomic(bundle / "config.json", json.dumps(s), mode=0o600, durable=False)  # env: secrets
        (bundle / "log").touch()
        store.set_state(cid, state="created", creator_pid=None)
    except BaseException:
        store.remove(cid, force=True)
        raise
    return store.get(cid)


def _check_searchable(store: Containers) -> None:
    """Refuse, up front, a FLEX_HOME the containers' roots cannot pass through (crun would fail with
    "make .../rootfs private: Permission denied"): e.g. FLEX_HOME=$(mktemp -d)/home, below a 0700 dir.
    Podman fails alike; making the parent searchable is the user's call, not ours."""
    for d in [store.dir, *store.dir.parents]:
        mode = d.stat().st_mode
        if not mode & 0o001:
            raise FailedPrecondition(
                f"FLEX_HOME {store.home.root}: {d} is not searchable by other users (mode {mode & 0o7777:04o}), "
                "and each container's root, an unprivileged id range, must pass through it to its rootfs",
                hint=f"chmod o+x {d}, or use a FLEX_HOME whose parents others may search (default /var/lib/flex)")


def _check_reachable(store: Containers) -> None:
    """keep-id: the container's root is a subuid, and crun reaches the rootfs as it. It may pass a directory
    others may search, or one whose owner and group are both the user's (mapped in the container, so its
    capabilities count there, as in a 0700 home directory); not, say, a 0700 one of group root."""
    for d in [store.dir, *store.dir.parents]:
        st = d.stat()
        if st.st_mode & 0o001 or (st.st_uid == os.getuid() and st.st_gid == os.getgid()):
            continue
        raise FailedPrecondition(
            f"--userns keep-id: {d} (owner {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o}) cannot be "
            "passed by the container's root, a subordinate id, on its way to the root filesystem",
            hint=f"chmod o+x {d}, or give it your own group: chgrp {os.getgid()} {d}")


def _make_bundle(store: Containers, bundle: Path, idmap: IdMap) -> None:
    """The container's directory. Root runner: crun reaches the rootfs mount inside it as the
    container's root (a pool id, after entering the user namespace), so every directory above must be
    searchable by others, and the bundle itself only by that root's group: root:<its gid>, 0710, as
    Docker keeps its userns-remapped root. Nobody else may look in (the upper dir, the log)."""
    bundle.mkdir(mode=0o700)
    if store.rootless:
        return
    os.chown(bundle, 0, idmap.host_gid(0))
    bundle.chmod(0o710)


def _record(store: Containers, cid: str, name: str, opts: CreateOptions, cgroup: str | None,
            bundle: Path, snapshot: str | None, keep: KeepId | None = None) -> IdMap:
    """The container's record (state ``creating``), root its id range, and a hold on the image's
    snapshots (so `flex image prune` keeps the layers it runs on): one transaction."""
    if snapshot is not None:
        from flex.runtime.leases import leases

        leases.ensure_schema(store.db)
    with store.db.transaction() as conn:
        if snapshot is not None:
            # resolution read the image unleased: GC may have swept it since (`image rm` + prune). GC
            # sweeps rows in one transaction, so a row seen here stays until this lease lets it go.
            if conn.execute("SELECT 1 FROM snapshots WHERE key = ?", (snapshot,)).fetchone() is None:
                raise _ImageGone(snapshot)
            # a lease without an owner pid lives until we delete it (container removal, or GC)
            now = time.time()
            conn.execute("INSERT OR REPLACE INTO leases (id, created, expires, pid, pid_start) "
                         "VALUES (?, ?, ?, NULL, NULL)", (f"container:{cid}", now, now + 100 * 365 * 86400))
            conn.execute("INSERT OR IGNORE INTO lease_resources (lease_id, kind, ref) VALUES (?, 'snapshot', ?)",
                         (f"container:{cid}", snapshot))
        if conn.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
            raise AlreadyExists(f"a container named {name!r} already exists")
        if store.pool is not None:
            idmap = IdMap.single_range(store.pool.allocate(cid, bundle))
        elif keep is not None:
            idmap = keep.host(store.rootless_idmap())  # what the container's ids are on the host (inspect)
        else:
            idmap = store.rootless_idmap()
        conn.execute(
            "INSERT INTO containers (id, name, image, state, created_at, creator_pid, auto_remove, options, "
            "idmap, cgroup) VALUES (?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?)",
            (cid, name, opts.image, time.time(), os.getpid(), int(opts.auto_remove),
             json.dumps(asdict(opts)), json.dumps({"uids": idmap.uids, "gids": idmap.gids}), cgroup))
    return idmap


def _with_network(store: Containers, cid: str, name: str, opts: CreateOptions, s: dict[str, Any]) -> dict[str, Any]:
    if opts.net == "none":
        if opts.publish:
            raise InvalidArgument("-p needs a network: --net private")
        return s
    from flex.runtime.network.networks import NetworkRequest, parse_publish

    networks = store.networks()
    # --docker: dockerd needs CAP_NET_ADMIN in the container's network namespace (and crun a fresh sysfs),
    # which only a namespace owned by the container's user namespace gives
    req = NetworkRequest(mode=opts.net, ports=[parse_publish(p) for p in opts.publish], hostname=name[:63],
                         allow_host_network=opts.allow_host_network, own_netns=opts.docker)
    prepared = networks.prepare(cid, req)
    if opts.net == "host":
        s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "network"]
    else:
        s = spec.with_netns(s, prepared.netns_path)
    for dst, src in prepared.etc_files.items():
        s = spec.with_bind(s, Path(src), dst, readonly=True)
    return s

