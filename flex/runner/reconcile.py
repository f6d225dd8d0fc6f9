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
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from flex.api import Environment, EnvironmentStatus, PortStatus, set_condition
from flex.client import FlexClient
from flex.errors import FlexError, InvalidArgument, NotFound, Unavailable
from flex.runner.container_plan import KEEP_ALIVE, ContainerPlan, PlanError, plan_container, read_devcontainer
from flex.runner.lifecycle import HookFailed, run_hooks
from flex.runner.machine import ENV_LABEL, Machine
from flex.runner.source import ensure_git_source
from flex.runner.storage import EnvPaths
from flex.runtime.containers.create import CreateOptions
from flex.runtime.containers.store import Container

__all__ = ["CONDITIONS", "Ctx", "Result", "Retry", "container_name", "reconcile", "teardown"]

CONDITIONS = ("VolumeReady", "SourceReady", "ImageReady", "ContainerReady", "LifecycleReady", "Ready")
log = logging.getLogger("flex.runner")


@dataclass
class Ctx:
    client: FlexClient
    runner_id: str
    kind: str  # desktop | vm
    home: Path
    machine: Machine


@dataclass
class Result:
    requeue_after: float | None = None
    phase: str | None = None


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
        teardown(ctx, env_id)
        with contextlib.suppress(NotFound):
            ctx.client.confirm_teardown(ctx.runner_id, env_id)
        return Result(phase="deleted")
    try:
        _converge(ctx, env, st)
    except _Failed as f:
        st.set(f.condition, False, f.reason, f.message)
        st.set("Ready", False, f.reason, f.message)
        st.phase("failed", f.message.splitlines()[0])
        st.flush()
        if f.retry:
            raise Retry(f"{f.reason}: {f.message}") from None
    return Result(phase=st.status.phase)


def teardown(ctx: Ctx, env_id: str) -> None:
    """Remove the environment's containers, then its volume and state: each step safe to repeat."""
    for c in ctx.machine.of_environment(env_id):
        ctx.machine.remove(c.id)
    EnvPaths(ctx.home, env_id).remove(ctx.machine.namespace_root())


def _converge(ctx: Ctx, env: Environment, st: _Status) -> None:
    spec, meta = env.spec, env.metadata
    paths = EnvPaths(ctx.home, meta.id)
    c = ctx.machine.settle(meta.id)
    if spec.desired_phase == "running" and (c is None or c.state != "running"):
        st.phase("starting")
        # Failed at this generation already: say "starting" only if something changes. Writing it now and
        # "failed" again after would make two watch events per try, and each event another try.
        if not (env.status.phase == "failed" and env.status.observed_generation == meta.generation):
            st.flush()

    # 1. the workspace volume
    try:
        volume = paths.ensure()
    except OSError as err:
        raise _Failed("VolumeReady", "VolumeFailed", f"cannot create the workspace volume: {err}", retry=True) from err
    st.set("VolumeReady", True, "Created", f"workspace volume {volume}")

    # 2. the source
    if spec.source.git is not None:
        source = paths.workspace(meta.name)
        try:
            commit = ensure_git_source(spec.source.git, spec.source.ref, source, paths.state / "source.json",
                                       paths.tmp, allow_file=ctx.kind == "desktop")
        except Unavailable as err:
            raise _Failed("SourceReady", "CloneFailed", f"{err.message}; check that {spec.source.git} is "
                          "reachable from the runner and that the ref exists", retry=True) from err
        except FlexError as err:
            raise _Failed("SourceReady", "SourceNotAllowed", err.message) from err
        st.set("SourceReady", True, "Cloned", f"{spec.source.git} at {spec.source.ref or 'its default branch'} "
               f"(commit {commit[:12]})")
    else:
        assert spec.source.path is not None
        if ctx.kind != "desktop":
            raise _Failed("SourceReady", "LocalSourceNotAllowed", "source.path is a folder on a desktop runner; "
                          "this runner is a VM: give source.git")
        source = Path(spec.source.path)
        if not source.is_dir():
            raise _Failed("SourceReady", "SourceNotFound", f"{source} is not a folder on this machine", retry=True)
        st.set("SourceReady", True, "LocalFolder", str(source))

    # 3. the devcontainer and its image
    try:
        plan = plan_container(read_devcontainer(source, spec.devcontainer, paths.state, dict(spec.env)), meta.name)
    except PlanError as err:
        raise _Failed("ImageReady", err.reason, err.message) from err
    try:
        pulled = ctx.machine.ensure_image(plan.image)
    except Unavailable as err:
        raise _Failed("ImageReady", "ImagePullFailed", f"pulling {plan.image}: {err.message}", retry=True) from err
    except FlexError as err:
        raise _Failed("ImageReady", "ImagePullFailed", f"pulling {plan.image}: {err.message}"
                      + (f" ({err.hint})" if err.hint else ""), retry=True) from err
    st.set("ImageReady", True, "Pulled" if pulled else "Present", plan.image)
    st.status.ports = [PortStatus(port=p) for p in
                       sorted({*plan.forward_ports, *(p.port for p in spec.ports)})]

    # 4. the container
    if spec.desired_phase == "stopped":
        if c is not None and c.state == "running":
            st.phase("stopping")
            st.flush()
            c = ctx.machine.stop(c)
        what = "its writable layer and workspace volume are kept" if c is not None else "no container yet"
        st.set("ContainerReady", False, "Stopped", f"stopped ({what}); start the environment to use it")
        st.set("Ready", False, "Stopped", "the environment is stopped")
        st.phase("stopped")
        st.flush()
        return
    if c is None:
        c = _create(ctx, env, plan, source)
    if c.state != "running":
        try:
            c = ctx.machine.start(c)
        except FlexError as err:
            raise _Failed("ContainerReady", "StartFailed", err.message, retry=True) from err
    st.set("ContainerReady", True, "Running", f"container {c.name} ({c.id[:12]})")
    st.flush()

    # 5. lifecycle hooks; Ready once the waitFor hook is done
    def ready() -> None:
        st.set("Ready", True, "Ready", f"{plan.wait_for} done" if plan.hooks else "no lifecycle hooks")
        st.phase("running")
        st.flush()

    def run(argv: list[str], user: str | None, workdir: str) -> tuple[int, str]:
        return ctx.machine.exec(c, argv, user, workdir)

    try:
        ran = run_hooks(plan, run, paths.state / "hooks", c.id, c.started_at or 0.0, meta.generation, ready)
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


def _create(ctx: Ctx, env: Environment, plan: ContainerPlan, source: Path) -> Container:
    spec, env_id = env.spec, env.metadata.id
    limited = ctx.machine.containers.cgroup_parent() is not None
    opts = CreateOptions(
        image=plan.image, name=container_name(env_id), labels={ENV_LABEL: env_id},
        entrypoint=KEEP_ALIVE if plan.override_command else None,
        env=[f"{k}={v}" for k, v in {**plan.container_env, **spec.env}.items()],
        user=plan.container_user, workdir=plan.workspace_folder,
        volumes=[f"{source}:{plan.workspace_folder}"], net="private",
        cpus=spec.resources.cpus if limited else None, memory=spec.resources.memory if limited else None,
        docker=spec.docker)
    try:
        c = ctx.machine.create(opts)
    except (InvalidArgument, NotFound) as err:
        raise _Failed("ContainerReady", "CreateFailed", err.message + (f" ({err.hint})" if err.hint else "")) from err
    except FlexError as err:
        raise _Failed("ContainerReady", "CreateFailed", err.message + (f" ({err.hint})" if err.hint else ""),
                      retry=True) from err
    if not ctx.machine.rootless and source.is_relative_to(ctx.home):
        # a root runner's container root is a pool uid: give it the workspace (rootless, it is the user)
        _chown_tree(source, c.idmap.host_uid(0), c.idmap.host_gid(0))
    return c


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Everything below first, the top last: a chown cut short is redone, since the top says it is not done."""
    if root.lstat().st_uid == uid:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
    os.lchown(root, uid, gid)
