"""reconcile(ctx, env_id): make one environment on this machine what its spec says, one idempotent step
after another, each visible as a condition; the only place that writes status.

    VolumeReady     FLEX_HOME/runner/volumes/<id>/ exists
    SourceReady     the git source is cloned into it (or, on a desktop runner, a local folder is used)
    ImageReady      the devcontainer.json is readable and image-based, and its image is in the store
    ContainerReady  the one container labelled flex.dev/environment=<id> exists and runs (or is stopped)
    LifecycleReady  the lifecycle hooks due have run (lifecycle.py)
    Ready           usable: running, and the waitFor hook is done

Phases: pending → starting → running; stopping → stopped; deleting; failed (a condition's reason and
message say what failed and what to do). Level-triggered: it reads the environment afresh, looks at the
machine, and does what is missing, so running it twice, or after a kill -9 anywhere, converges. A failed
step that may heal by itself (a registry or git server down) raises Retry, and the queue backs off.
Status is written with If-Match; a Conflict propagates, and the queue reads again and retries.

A move to another runner (spec.move, issue 17.5: flex/runner/moves.py) makes the runner it leaves stop the
environment and back it up, then keep its copy without writing status, then remove it once the new runner has it
Ready; the new runner restores from the move's backup before anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flex.api import Environment, EnvironmentStatus, PortStatus, set_condition
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.devcontainer.config import ResolvedConfig
from flex.errors import Conflict, FailedPrecondition, FlexError, InvalidArgument, NotFound, Unavailable
from flex.runner import backup_hooks, moves, owner_maps
from flex.runner.build.step import BuildFailed, BuiltImage, ensure_environment_image
from flex.runner.capacity import machine_capacity
from flex.runner.container_plan import (
    KEEP_ALIVE,
    ContainerPlan,
    PlanError,
    needs_build,
    plan_container,
    resolve_devcontainer,
)
from flex.runner.disk import disk_usage, human_bytes
from flex.runner.disk_image import DiskImage, DiskImageError, ensure_disk_image, remove_disk_image
from flex.runner.lifecycle import HookFailed, run_hook, run_hooks
from flex.runner.local_folder import folder_mount_point, mount_folder, unmount_folder
from flex.runner.machine import CONFIG_LABEL, ENV_LABEL, GENERATION_LABEL, Machine
from flex.runner.mounts import Mount, MountError, place_mounts
from flex.runner.source import SourceRefused, ensure_git_source
from flex.runner.storage import EnvPaths, remove_tree
from flex.runtime.containers.create import CreateOptions
from flex.runtime.containers.rootfs import lookup_user
from flex.runtime.containers.store import Container

__all__ = ["CONDITIONS", "Ctx", "Result", "Retry", "container_name", "crash_point", "reconcile", "teardown"]

CONDITIONS = ("VolumeReady", "SourceReady", "ImageReady", "ContainerReady", "LifecycleReady", "Ready")
log = logging.getLogger("flex.runner")
_CONTAINER_ENV = re.compile(r"\$\{containerEnv:([^}:]+)(?::([^}]*))?\}")


@dataclass
class Ctx:
    client: FlexClient
    runner_id: str
    kind: str  # desktop | vm
    home: Path
    machine: Machine
    # held while pulling or building an image: --max-builds of them at once across the workers
    builds: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))


@dataclass
class Result:
    requeue_after: float | None = None
    phase: str | None = None
    message: str | None = None  # why, when phase is "failed": the runner's log says it too


class Retry(Exception):
    """A step failed in a way that may heal by itself; the status says so, the queue backs off."""


@dataclass
class _Failed(Exception):
    condition: str
    reason: str
    message: str
    retry: bool = False


def container_name(env_id: str) -> str:
    return f"flex-{env_id}"


@dataclass
class _Status:
    """The status being written: conditions set against the generation acted on, written when changed."""

    ctx: Ctx
    env: Environment
    status: EnvironmentStatus = field(init=False)
    rv: int = field(init=False)
    written: dict[str, object] = field(init=False)

    def __post_init__(self) -> None:
        self.status = self.env.status.model_copy(deep=True)
        self.rv = self.env.metadata.resource_version
        self.written = self.env.status.to_wire()

    def set(self, type_: str, value: bool, reason: str, message: str = "") -> None:
        set_condition(self.status, type_, value, reason=reason, message=message[:4096],
                      generation=self.env.metadata.generation)

    def phase(self, phase: str, message: str | None = None) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        self.status.message = message

    def flush(self) -> None:
        self.status.observed_generation = self.env.metadata.generation
        if self.status.to_wire() == self.written:
            return
        new = self.ctx.client.update_status(self.env.metadata.id, self.status, resource_version=self.rv)
        self.rv = new.metadata.resource_version
        self.written = self.status.to_wire()


def reconcile(ctx: Ctx, env_id: str) -> Result:
    try:
        env = ctx.client.runner_environment(ctx.runner_id, env_id)  # a fresh read, never the event's copy
    except NotFound:
        teardown(ctx, env_id)  # deleted, or no longer bound here: nothing of it may stay on this machine
        return Result()
    st = _Status(ctx, env)
    if env.metadata.deleting:
        st.phase("deleting")
        st.flush()
        backup_hooks.back_up_before_delete(ctx.client, ctx.home, ctx.machine, env, st.status, st.flush)
        crash_point("deleted-backup")
        teardown(ctx, env_id)
        with contextlib.suppress(NotFound):
            ctx.client.confirm_teardown(ctx.runner_id, env_id)
        return Result(phase="deleted")
    role = moves.role(env, ctx.runner_id)  # issue 17.5: moving away from this runner
    if role == "keep-copy":  # bound to the new runner now, which restores: keep everything, write nothing
        return Result(phase="moving")
    if role == "remove-copy":  # Ready on the new runner: only now does the old copy go
        teardown(ctx, env_id)
        crash_point("moved-away")
        with contextlib.suppress(NotFound, FailedPrecondition):
            ctx.client.confirm_teardown(ctx.runner_id, env_id)
        return Result(phase="moved")
    if role == "stop-and-back-up":  # stopped first, so the move's backup (spec.backup.request) is exact
        env = env.model_copy(update={"spec": env.spec.model_copy(update={"desired_phase": "stopped"})})
    try:
        _converge(ctx, env, st)
        try:
            backup_hooks.back_up_if_asked(ctx.client, ctx.home, ctx.machine, env, st.status, st.flush)
        except Conflict:
            # the spec moved on meanwhile (a start after a stop): its reconcile goes next, without the backoff a
            # failure would add; the backup's row says what was made, and the next reconcile's status says so
            return Result(requeue_after=0.0, phase=st.status.phase)
        if backup_hooks.retention_due(ctx.home, env_id) and _settled(st):
            if _changed_since(ctx, env_id, st):
                return Result(requeue_after=0.0, phase=st.status.phase)  # Ready first, retention after it
            backup_hooks.retain_if_due(ctx.client, ctx.runner_id, ctx.home, ctx.machine, env, st.status,
                                         st.flush)
    except _Failed as f:
        st.set(f.condition, False, f.reason, f.message)
        st.set("Ready", False, f.reason, f.message)
        st.phase("failed", f.message.splitlines()[0])
        st.flush()
        if f.retry:
            raise Retry(f"{f.reason}: {f.message}") from None
        return Result(phase="failed", message=f"{f.reason}: {f.message.splitlines()[0]}")
    return Result(phase=st.status.phase)


def _settled(st: _Status) -> bool:
    """Where its spec wants it: stopped, or running and Ready (the time for slow chores such as retention)."""
    ready = st.status.condition("Ready")
    return st.status.phase == "stopped" or (st.status.phase == "running" and ready is not None and
                                            ready.status == "True")


def _changed_since(ctx: Ctx, env_id: str, st: _Status) -> bool:
    """Whether someone else wrote the environment since our last status write (a start, a delete...)."""
    try:
        return ctx.client.runner_environment(ctx.runner_id, env_id).metadata.resource_version != st.rv
    except NotFound:
        return True


def crash_point(step: str) -> None:
    """kill -9 of ourselves right after ``step`` when FLEX_RUNNER_CRASH_AFTER names it: the tests' way to cut
    a reconcile at each step boundary (a real SIGKILL; nothing else changes)."""
    if os.environ.get("FLEX_RUNNER_CRASH_AFTER") == step:
        log.warning("FLEX_RUNNER_CRASH_AFTER=%s: kill -9 of the runner", step)
        os.kill(os.getpid(), signal.SIGKILL)


def teardown(ctx: Ctx, env_id: str) -> None:
    """Remove the environment's containers, then its volume and state: each step safe to repeat."""
    for c in ctx.machine.of_environment(env_id):
        ctx.machine.remove(c.id)
    crash_point("teardown-containers")
    point = folder_mount_point(ctx.home, env_id)
    unmount_folder(point)  # a kill -9 between mounting a local folder and starting may have left it
    with contextlib.suppress(FileNotFoundError):
        point.rmdir()  # never rm -rf: were it still mounted, that would delete the user's files
    paths = EnvPaths(ctx.home, env_id)
    remove_disk_image(ctx.home, env_id, paths.volume)  # unmounted before the volume's rm -rf
    crash_point("teardown-disk")
    paths.remove(ctx.machine.namespace_root())


def _converge(ctx: Ctx, env: Environment, st: _Status) -> None:
    spec, meta = env.spec, env.metadata
    paths = EnvPaths(ctx.home, meta.id)
    volume, disk = _volume(ctx, env, paths)
    try:  # issue 17: a new environment from a backup has its workspace restored before anything else
        backup_hooks.restore_if_asked(ctx.home, env, st.status, st.flush, ctx.machine)
    except Unavailable:
        raise  # a status write found no control plane: nothing failed here, try again (a move must not roll back)
    except FlexError as err:
        raise _Failed("Restored", "RestoreFailed", err.message, retry=True) from err
    c = ctx.machine.settle(meta.id)
    if spec.desired_phase == "running" and (c is None or c.state != "running"):
        st.phase("starting")
        # Failed at this generation already: say "starting" only if something changes. Writing it now and
        # "failed" again after would make two watch events per try, and each event another try.
        if not (env.status.phase == "failed" and env.status.observed_generation == meta.generation):
            st.flush()

    # 1. the workspace volume (made above, before a restore writes into it)
    if disk is None:
        st.set("VolumeReady", True, "Created", f"workspace volume {volume}")
    elif disk.note:
        st.set("VolumeReady", True, "DiskGrowPending" if disk.pending else "DiskNotShrunk",
               f"workspace volume {volume}: {disk.note}")
    else:
        st.set("VolumeReady", True, "DiskImage", f"workspace volume {volume} on a {human_bytes(disk.size)} disk "
               f"image ({disk.path}, {disk.device})")

    # 2. the source
    if spec.source.git is not None:
        source = paths.workspace(meta.name)
        try:
            commit = ensure_git_source(spec.source.git, spec.source.ref, source, paths.state / "source.json",
                                       paths.tmp if disk is None else _clone_tmp(volume),
                                       allow_file=ctx.kind == "desktop")
        except Unavailable as err:
            raise _Failed("SourceReady", "CloneFailed", f"{err.message}; check that {spec.source.git} is "
                          "reachable from the runner and that the ref exists", retry=True) from err
        except SourceRefused as err:
            raise _Failed("SourceReady", "SourceUpdateRefused", f"{err.message} ({err.hint})") from err
        except FlexError as err:
            raise _Failed("SourceReady", "SourceNotAllowed", err.message) from err
        st.set("SourceReady", True, "Cloned", f"{spec.source.git} at {spec.source.ref or 'its default branch'} "
               f"(commit {commit[:12]})")
        source_rev = commit
    else:
        assert spec.source.path is not None
        if ctx.kind != "desktop":
            raise _Failed("SourceReady", "LocalSourceNotAllowed", "source.path is a folder on a desktop runner; "
                          "this runner is a VM: give source.git")
        source = Path(spec.source.path)
        if not source.is_dir():
            raise _Failed("SourceReady", "SourceNotFound", f"{source} is not a folder on this machine", retry=True)
        note = paths.state / "folder-unmapped.txt"  # why the last start could not idmap the folder
        unmapped = note.read_text() if note.exists() else ""
        st.set("SourceReady", True, "LocalFolderNotIdmapped" if unmapped else "LocalFolder",
               f"{source}: {unmapped}" if unmapped else str(source))
        source_rev = str(source)

    # 3. the devcontainer and its image (built when it has a Dockerfile or features: flex/runner/build/)
    try:
        resolved = resolve_devcontainer(source, spec.devcontainer, paths.state, dict(spec.env))
        config = resolved.configuration
        built = None
        if needs_build(config):
            with ctx.builds:  # --max-builds: builds (and pulls) at a time
                built = _build(ctx, env, st, resolved, paths.state)
        plan = plan_container(config, meta.name, (built.image, built.metadata, built.merged) if built else None)
    except PlanError as err:
        raise _Failed("ImageReady", err.reason, err.message) from err
    if built is not None:
        st.set("ImageReady", True, "Built", plan.image)
    try:
        with ctx.builds:
            pulled = ctx.machine.ensure_image(plan.image)
    except Unavailable as err:
        raise _Failed("ImageReady", "ImagePullFailed", f"pulling {plan.image}: {err.message}", retry=True) from err
    except FlexError as err:
        raise _Failed("ImageReady", "ImagePullFailed", f"pulling {plan.image}: {err.message}"
                      + (f" ({err.hint})" if err.hint else ""), retry=True) from err
    if built is None:
        st.set("ImageReady", True, "Pulled" if pulled else "Present", plan.image)
    mounts = plan.mounts
    if (spec.docker or plan.docker) and not any(m.target.rstrip("/") == "/var/lib/docker" for m in mounts):
        # nested Docker's images and containers on a volume: they survive stop, start, recreate and backup
        mounts = (*mounts, Mount("volume", "docker", "/var/lib/docker"))
    try:
        binds, made = place_mounts(mounts, source, paths.volume, desktop=ctx.kind == "desktop")
        # a root runner binds a local folder through an idmapped mount of it (local_folder.py)
        folder_point = folder_mount_point(ctx.home, meta.id) if spec.source.path is not None and \
            not ctx.machine.rootless and plan.workspace_source is None else None
        if folder_point is not None:
            folder_point.mkdir(mode=0o700, parents=True, exist_ok=True)
            wbinds = [f"{folder_point}:{plan.workspace_folder}"]
        elif plan.workspace_source is not None:
            wbinds, _ = place_mounts((Mount("bind", plan.workspace_source, plan.workspace_folder),), source,
                                     paths.volume, desktop=ctx.kind == "desktop")
        else:
            wbinds = [f"{source}:{plan.workspace_folder}"]
    except MountError as err:
        raise _Failed("ContainerReady", "MountNotAllowed", str(err)) from err
    st.status.ports = [PortStatus(port=p, visibility="public" if p in plan.public_ports else None) for p in
                       sorted({*plan.forward_ports, *(p.port for p in spec.ports)})]
    userns = _keep_id(ctx, env, st, plan, source)

    # 4. the container (DiskPressure first: over its disk limit, an environment is not started)
    over = _disk_pressure(ctx, env, st, paths, c)
    if spec.desired_phase == "stopped":
        if c is not None and c.state == "running":
            st.phase("stopping")
            st.flush()
            c = ctx.machine.stop(c)
            crash_point("stopped")
        what = "its writable layer and workspace volume are kept" if c is not None else "no container yet"
        st.set("ContainerReady", False, "Stopped", f"stopped ({what}); start the environment to use it")
        st.set("Ready", False, "Stopped", "the environment is stopped")
        st.phase("stopped")
        st.flush()
        return
    want = _fingerprint(env, config, source_rev, built.digest if built is not None else "", userns)
    if c is not None and c.labels.get(CONFIG_LABEL) != want and \
            meta.generation > int(c.labels.get(GENERATION_LABEL) or 0):
        # devcontainer, source or env changed: a new container on the same volumes, as
        # `devcontainer up --remove-existing-container` (its hooks run again: their markers name the old one)
        msg = f"the configuration changed: replacing {c.name}"
        for type_ in ("ContainerReady", "LifecycleReady", "Ready"):
            st.set(type_, False, "Recreating", msg)
        st.phase("starting", msg)
        st.flush()
        _remember_owner(paths, c, ctx.machine.rootless)
        ctx.machine.remove(c.id)
        crash_point("recreate-removed")
        c = None
    if over and (c is None or c.state != "running"):
        raise _Failed("ContainerReady", "DiskLimitExceeded", f"{over}; it is not started again until it fits: "
                      "raise spec.resources.disk")
    if c is None:
        unmet = _unmet(ctx, plan)  # checked before making a container, never against one that runs
        if unmet:
            raise _Failed("ContainerReady", "HostRequirementsNotMet", f"hostRequirements: {unmet}; choose a "
                          "runner with more room (spec.runnerSelector) or lower hostRequirements")
        _initialize(ctx, env, plan, source, paths)
        c = _create(ctx, env, plan, [*wbinds, *binds], want, userns)
        crash_point("created")
    if c.state != "running":  # a restored writable layer goes in before the container first starts
        backup_hooks.place_restored_upper(ctx.home, meta.id, c, ctx.machine.containers.bundle(c.id), ctx.machine)
    if not ctx.machine.rootless:
        # a root runner's container root is a pool uid: give it the workspace and volumes, every time (a shift
        # cut short is finished); rootless, the container's root is the user, who owns them already
        trees = [p for p in (source, *made) if p.is_relative_to(ctx.home)]
        _shift_trees(trees, paths.state / "owner.json", c.idmap.uids[0][1], c.idmap.gids[0][1],
                     c.idmap.uids[0][2])
    if ctx.machine.rootless and c.state != "running":
        # files restored, or made under a remoteUser of another uid: into this container's map first
        owner_maps.shift_volume(ctx.machine.containers, paths.state, paths.volume, c.options.get("userns"))
    if userns is not None and c.state != "running":
        _give_new_volumes_to_root(ctx, made, c)
    if c.state != "running" and plan.cap_add:
        ctx.machine.add_capabilities(c, list(plan.cap_add))
    try:
        ctx.machine.apply_resources(c, spec.resources.cpus if _limited(ctx) else None,
                                    spec.resources.memory if _limited(ctx) else None)
    except FlexError as err:
        raise _Failed("ContainerReady", "ResizeFailed", f"applying cpus {spec.resources.cpus} and memory "
                      f"{spec.resources.memory}: {err.message}", retry=True) from err
    if c.state != "running":
        try:
            if folder_point is not None:
                _mount_local_folder(ctx, st, c, plan, source, folder_point, paths)
            c = ctx.machine.start(c)
            crash_point("started")
        except FlexError as err:
            raise _Failed("ContainerReady", "StartFailed", err.message, retry=True) from err
        finally:
            if folder_point is not None:
                unmount_folder(folder_point)  # the container has its own copy of the mount
    # written before anything slow runs in the container (the env probe, a hook), else together with Ready:
    # a warm start has nothing left to run before Ready, and one status write fewer (issue 14)
    st.set("ContainerReady", True, "Running", f"container {c.name} ({c.id[:12]})")

    # 5. lifecycle hooks; Ready once the waitFor hook is done
    def ready() -> None:
        st.set("Ready", True, "Ready", f"{plan.wait_for} done" if plan.hooks else "no lifecycle hooks")
        if not plan.hooks:  # nothing can fail after Ready: one status write, not two
            st.set("LifecycleReady", True, "HooksDone", "no lifecycle hooks")
        st.phase("running")
        st.flush()

    # the user's shell's environment only when a hook is about to run: only hooks see it, and with none due
    # (none in the config, or all done) the probe's exec, a login shell, is time before Ready for nothing
    hook_env: list[dict[str, str]] = []
    flushing = threading.Lock()  # an object hook's entries run in parallel

    def run(argv: list[str], user: str | None, workdir: str) -> tuple[int, str]:
        with flushing:
            st.flush()  # a no-op once written
            if not hook_env:
                hook_env.append(_remote_env(ctx, c, plan, paths, before=st.flush))
        return ctx.machine.exec(c, argv, user, workdir, hook_env[0])

    try:
        ran = run_hooks(plan, run, paths.state / "hooks", c.id, c.started_at or 0.0, meta.generation, ready,
                        log=paths.hooks_log)
    except HookFailed as err:
        st.set("LifecycleReady", False, err.reason, err.message)
        if st.status.condition("Ready") is None or st.status.phase != "running":
            raise _Failed("LifecycleReady", err.reason, err.message) from err
        st.flush()  # a hook after waitFor failed: the environment stays usable, the condition says what broke
        return
    if ran:
        log.info("environment %s: ran %s", meta.id, ", ".join(ran))
    st.set("LifecycleReady", True, "HooksDone", ", ".join(h.name for h in plan.hooks) or "no lifecycle hooks")
    st.flush()


def _volume(ctx: Ctx, env: Environment, paths: EnvPaths) -> tuple[Path, DiskImage | None]:
    """The volume directory; on a root runner mounted from its disk image of spec.resources.disk (made or
    grown as needed) before anything reads or writes it. Rootless: a plain directory (the soft limit)."""
    try:
        volume = paths.ensure()
        if ctx.machine.rootless or os.geteuid() != 0:
            return volume, None
        running = any(c.state == "running" for c in ctx.machine.of_environment(env.metadata.id))
        disk = ensure_disk_image(ctx.home, env.metadata.id, volume, env.spec.resources.disk, in_use=running)
        crash_point("disk-image")
        return volume, disk
    except OSError as err:
        raise _Failed("VolumeReady", "VolumeFailed", f"cannot create the workspace volume: {err}", retry=True) from err
    except DiskImageError as err:
        raise _Failed("VolumeReady", "DiskImageFailed", f"the workspace volume's disk image: {err.message}",
                      retry=True) from err


def _clone_tmp(volume: Path) -> Path:
    """Where a clone is made before its rename into a volume on a disk image: on that filesystem (a rename
    cannot cross to it), emptied first (what a clone cut short left; one reconcile of an environment at a time)."""
    tmp = volume / ".flex-tmp"
    remove_tree(tmp)
    tmp.mkdir(mode=0o700)
    return tmp


def _build(ctx: Ctx, env: Environment, st: _Status, resolved: ResolvedConfig, state: Path) -> BuiltImage:
    def starting() -> None:
        st.phase("building")
        st.set("ImageReady", False, "Building", "building the image (build.log has its output)")
        st.flush()

    try:
        return ensure_environment_image(resolved, home=ctx.home, env_id=env.metadata.id, state=state,
                                        generation=env.metadata.generation, starting=starting)
    except BuildFailed as err:
        raise _Failed("ImageReady", "BuildFailed", err.message, retry=err.retry) from err


def _disk_pressure(ctx: Ctx, env: Environment, st: _Status, paths: EnvPaths, c: Container | None) -> str:
    """Measure the environment's disk against spec.resources.disk (flex/runner/disk.py: a soft limit) and
    set DiskPressure; returns what is over, or "" when it fits."""
    roots = [paths.volume]
    if c is not None:
        roots.append(ctx.machine.containers.bundle(c.id) / "upper")  # the writable layer
    used, limit = disk_usage(roots), env.spec.resources.disk
    what = (f"the environment uses {human_bytes(used)} of disk (workspace, volumes and writable layer), its "
            f"limit (spec.resources.disk) is {human_bytes(limit)}")
    if used > limit:
        st.set("DiskPressure", True, "OverDiskLimit", f"{what}; delete files or raise spec.resources.disk")
        return what
    st.set("DiskPressure", False, "UnderDiskLimit", what)
    return ""


def _mount_local_folder(ctx: Ctx, st: _Status, c: Container, plan: ContainerPlan, folder: Path, point: Path,
                        paths: EnvPaths) -> None:
    """Just before a start: the folder on ``point``, its owner being remoteUser (else containerUser, else
    root) inside; SourceReady says so when only a plain bind was possible."""
    try:
        lowers = ctx.machine.images.resolve(plan.image).lowers
        uid, gid, _ = lookup_user(lowers, plan.remote_user or plan.container_user or "")
    except FlexError:
        uid, gid = 0, 0  # a remoteUser the image lacks: the container's root
    unmapped = mount_folder(folder, point, uid, gid, c.idmap.host_uid(uid), c.idmap.host_gid(gid))
    note = paths.state / "folder-unmapped.txt"
    if unmapped:
        write_atomic(note, unmapped, mode=0o600)
        st.set("SourceReady", True, "LocalFolderNotIdmapped", f"{folder}: {unmapped}")
    else:
        note.unlink(missing_ok=True)
        st.set("SourceReady", True, "LocalFolder", str(folder))


def _keep_id(ctx: Ctx, env: Environment, st: _Status, plan: ContainerPlan, folder: Path) -> str | None:
    """Issue 14, rootless: a local folder is the user's, who is root in a plain rootless container; with a
    non-root remoteUser (else containerUser) the image has, the container gets ``--userns keep-id`` for that
    user's uid/gid, so the folder is theirs inside and their files the user's outside. None otherwise."""
    if not ctx.machine.rootless or env.spec.source.path is None:
        return None
    user = plan.remote_user or plan.container_user
    if not user:
        return None
    try:
        uid, gid, _ = lookup_user(ctx.machine.images.resolve(plan.image).lowers, user)
    except FlexError:
        return None  # a remoteUser the image lacks: the container's root, as before
    if uid == 0:
        return None
    st.set("SourceReady", True, "LocalFolder", f"{folder} (owned by {user}, uid {uid}, inside)")
    return f"keep-id:uid={uid},gid={gid}"


def _give_new_volumes_to_root(ctx: Ctx, made: list[Path], c: Container) -> None:
    """keep-id: a volume directory the runner just made is the user's, who is remoteUser inside; give an
    empty one to the container's root (a subuid: done as root in the user's namespace), as it is without keep-id.
    One that holds files, or that someone inside gave away, is left alone."""
    store, keep = ctx.machine.containers, c.keep_id
    fresh = [p for p in made if p.stat().st_uid == os.getuid() and not any(p.iterdir())]
    if store.keeper is None or keep is None or not fresh:
        return
    inner = keep.inner(store.rootless_idmap())
    uid, gid = inner.host_uid(0), inner.host_gid(0)  # the keeper's ids of the container's root
    keeper = store.keeper

    def give() -> None:
        for p in fresh:
            os.chown(p, uid, gid)

    keeper.call(give, "giving new volumes to the container's root")


def _limited(ctx: Ctx) -> bool:
    return ctx.machine.containers.cgroup_parent() is not None


def _fingerprint(env: Environment, config: dict[str, Any], source_rev: str, image_digest: str = "",
                 userns: str | None = None) -> str:
    """What the container is made from, bar resources (applied live): a change means a new container (a
    rebuilt image too: an edited Dockerfile or feature changes the digest, not the config; and the user
    namespace map, which a remoteUser of another uid changes)."""
    spec = env.spec
    made_of: dict[str, Any] = {"config": config, "env": spec.env, "source": source_rev, "docker": spec.docker}
    if image_digest:
        made_of["image"] = image_digest
    if userns:  # (only when set: containers made before keep-id keep their fingerprint)
        made_of["userns"] = userns
    if spec.rebuild:  # POST :rebuild (only when set: containers made before it keep their fingerprint)
        made_of["rebuild"] = spec.rebuild
    return hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _unmet(ctx: Ctx, plan: ContainerPlan) -> str:
    req, cap = plan.host_requirements, machine_capacity(ctx.home)
    out = []
    if req.cpus is not None and req.cpus > cap.cpus:
        out.append(f"{req.cpus} CPUs wanted, this runner has {cap.cpus:g}")
    if req.memory is not None and req.memory > cap.memory:
        out.append(f"{req.memory / 2**30:.1f} GiB of memory wanted, this runner has {cap.memory / 2**30:.1f}")
    if req.storage is not None and req.storage > cap.disk:
        out.append(f"{req.storage / 2**30:.1f} GiB of storage wanted, this runner has {cap.disk / 2**30:.1f}")
    if req.gpu:
        out.append("a GPU wanted, and flex runners give containers none")
    return "; ".join(out)


def _initialize(ctx: Ctx, env: Environment, plan: ContainerPlan, source: Path, paths: EnvPaths) -> None:
    """initializeCommand: on the host, before the container is made, in the source folder, as the user —
    only on a desktop runner (the user's own machine); a VM runner's host is not the user's to run on."""
    if plan.initialize is None:
        return
    if ctx.kind != "desktop" or env.spec.source.path is None:
        log.info("environment %s: initializeCommand is for desktop runners with a local folder; not run",
                 env.metadata.id)
        return
    st = source.stat()
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0 and st.st_uid != 0:
        as_user = {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}

    def on_host(argv: list[str], _user: str | None, workdir: str) -> tuple[int, str]:
        import subprocess

        try:
            r = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, errors="replace",
                               stdin=subprocess.DEVNULL, timeout=3600, **as_user)
        except OSError as err:
            return 127, f"{argv[0]}: {err}\n"
        except subprocess.TimeoutExpired:
            return 124, "initializeCommand took longer than an hour\n"
        return r.returncode, r.stdout + r.stderr

    try:
        run_hook(plan.initialize, on_host, None, str(source), paths.hooks_log)
    except HookFailed as err:
        raise _Failed("LifecycleReady", err.reason, err.message) from err


def _remote_env(ctx: Ctx, c: Container, plan: ContainerPlan, paths: EnvPaths,
                before: Callable[[], None]) -> dict[str, str]:
    """What hooks see beyond the container's own variables: the user's shell's environment (userEnvProbe,
    read once per container as the reference CLI does; ``before()`` first), then remoteEnv (null unsets, i.e.
    is left out)."""
    probed: dict[str, str] = {}
    if plan.user_env_probe is not None:
        cache = paths.state / "hooks" / f"{c.id}.env.json"
        try:
            probed = json.loads(cache.read_text())
        except (OSError, ValueError):
            script = ('s=$(getent passwd "$(id -un)" 2>/dev/null | cut -d: -f7); [ -x "$s" ] || s=/bin/sh; '
                      f'exec "$s" {plan.user_env_probe} "cat /proc/self/environ"')
            before()
            code, out = ctx.machine.exec(c, ["/bin/sh", "-c", script], plan.remote_user, plan.workspace_folder)
            if code == 0:
                for item in out.split("\0"):
                    key, sep, value = item.partition("=")
                    if sep and key and "\n" not in key and key not in ("PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME"):
                        probed[key] = value
                cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_atomic(cache, json.dumps(probed), mode=0o600)
            else:
                log.info("environment %s: userEnvProbe exited with %d; hooks get the container's environment",
                         c.labels.get(ENV_LABEL), code)
    env = dict(probed)
    for name, val in plan.remote_env.items():
        if val is None:
            env.pop(name, None)
        else:  # ${containerEnv:VAR[:default]} is the container's own, known only now
            env[name] = _CONTAINER_ENV.sub(lambda m: probed.get(m.group(1), m.group(2) or ""), val)
    return env


def _secrets(ctx: Ctx, env_id: str) -> dict[str, str]:
    """The owner's secrets for this environment (docs/security.md), read when its container is made: they go
    into the container's environment beside spec.env, and win over it, never into status or logs."""
    try:
        return {s.name: s.value for s in ctx.client.runner_secrets(ctx.runner_id, env_id).items}
    except NotFound:
        return {}  # a control plane without the secrets API, or the environment just went
    except FlexError as err:
        raise _Failed("ContainerReady", "SecretsUnavailable", f"reading the environment's secrets: {err.message}",
                      retry=True) from err


def _create(ctx: Ctx, env: Environment, plan: ContainerPlan, volumes: list[str], fingerprint: str,
            userns: str | None = None) -> Container:
    spec, env_id = env.spec, env.metadata.id
    opts = CreateOptions(
        image=plan.image, name=container_name(env_id),
        labels={ENV_LABEL: env_id, CONFIG_LABEL: fingerprint, GENERATION_LABEL: str(env.metadata.generation)},
        entrypoint=_entrypoint(plan),
        env=[f"{k}={v}" for k, v in {**plan.container_env, **spec.env, **_secrets(ctx, env_id)}.items()],
        user=plan.container_user, workdir=plan.workspace_folder,
        volumes=volumes, net="private",
        # CPU and memory come after, as a weight and a limit (apply_resources)
        memory=spec.resources.memory if _limited(ctx) else None,
        docker=spec.docker or plan.docker, init=plan.init, no_new_privileges=plan.no_new_privileges, userns=userns)
    try:
        c = ctx.machine.create(opts)
    except (InvalidArgument, NotFound) as err:
        raise _Failed("ContainerReady", "CreateFailed", err.message + (f" ({err.hint})" if err.hint else "")) from err
    except FlexError as err:
        raise _Failed("ContainerReady", "CreateFailed", err.message + (f" ({err.hint})" if err.hint else ""),
                      retry=True) from err
    return c


def _entrypoint(plan: ContainerPlan) -> list[str] | None:
    """Features' entrypoints (docker-in-docker's dockerd start) run first, as the reference runs them."""
    if not plan.override_command:
        return None
    if not plan.entrypoints:
        return KEEP_ALIVE
    return [KEEP_ALIVE[0], KEEP_ALIVE[1], "\n".join(plan.entrypoints) + "\n" + KEEP_ALIVE[2]]


def _remember_owner(paths: EnvPaths, c: Container, rootless: bool) -> None:
    """The id range (root) or map (rootless: owner_maps.py) the workspace's files are in, before the container
    holding it goes."""
    if rootless:
        owner_maps.record_map(paths.state, c.options.get("userns"))
    elif c.idmap.uids and not (paths.state / "owner.json").exists():
        write_atomic(paths.state / "owner.json", json.dumps({"uid": c.idmap.uids[0][1], "gid": c.idmap.gids[0][1]}))


def _shift_trees(roots: list[Path], owner_file: Path, uid: int, gid: int, size: int) -> None:
    """Move the files of the workspace and volumes into the container's id range, keeping who is who inside
    (a file of uid 1000 inside stays uid 1000 inside); a file from outside any range goes to the container's
    root. Each top goes last and ``owner_file`` (the old range) after them all, so a shift cut short is redone."""
    try:
        old = json.loads(owner_file.read_text())
        old_uid, old_gid = int(old["uid"]), int(old["gid"])
    except (OSError, ValueError, KeyError):
        old_uid, old_gid = -1, -1

    def moved(cur: int, old_base: int, new_base: int) -> int:
        if new_base <= cur < new_base + size:
            return cur
        if old_base >= 0 and old_base <= cur < old_base + size:
            return new_base + cur - old_base
        return new_base

    def one(path: str) -> None:
        st = os.lstat(path)
        os.lchown(path, moved(st.st_uid, old_uid, uid), moved(st.st_gid, old_gid, gid))

    for root in roots:
        if root.lstat().st_uid == uid and old_uid in (-1, uid):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                one(os.path.join(dirpath, name))
        one(str(root))
    owner_file.unlink(missing_ok=True)
