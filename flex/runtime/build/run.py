"""A RUN step: a flex container on the step's parent layers; its overlay upper dir becomes the layer.

The container is made the way `flex runtime run` makes one (user namespace, rootless as an ordinary
user, the runtime's networking), with the stage's Env, WorkingDir and User, the build args as
environment, and read-only binds for build.toml's mounts, bind mounts and secrets. Its output is
passed on line by line and its last lines kept for the error. Once it exited, its root filesystem is
unmounted and the upper dir handed on (upper.py makes it the layer), with the mount points the runtime
had to create, which are not part of the layer.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flex.errors import FlexError
from flex.runtime.build.timings import phase
from flex.runtime.containers.create import CreateOptions, create_container
from flex.runtime.containers.rootfs import ImageConfig, ResolvedImage, unmount_rootfs
from flex.runtime.containers.store import Containers
from flex.runtime.tasks import tasks

__all__ = ["BUILD_LABEL", "RunFailed", "RunRequest", "Take", "remove_orphans", "run_step"]

BUILD_LABEL = "flex.dev/build"


def remove_orphans(store: Containers) -> list[str]:
    """Remove the step containers of builds that died (kill -9): their builder was their monitor."""
    from flex.pids import pid_alive

    gone = []
    for c in store.with_labels({BUILD_LABEL: "1"}):
        if not pid_alive(c.monitor_pid) and not pid_alive(c.creator_pid):
            with contextlib.suppress(FlexError):
                store.remove(c.id, force=True)
                gone.append(c.id)
    return gone


class RunFailed(FlexError):
    """A RUN step exited non-zero: the step, its exit code and the last lines of its output."""

    kind = "RunFailed"


@dataclass
class RunRequest:
    args: list[str]                    # the process (shell + command, or the exec form)
    lowers: list[Path]                 # parent layers, top first
    snapshot: str | None               # the parent's top snapshot (held by the container)
    env: list[str]
    workdir: str
    user: str
    binds: list[tuple[Path, str, bool]] = field(default_factory=list)  # host, container, read-only
    network: str = "private"
    label: str = ""


class _Layers:
    def __init__(self, req: RunRequest) -> None:
        self.req = req

    def resolve(self, ref: str) -> ResolvedImage:
        return ResolvedImage(ref=ref, lowers=self.req.lowers, config=ImageConfig(), snapshot=self.req.snapshot)


def _reader(fd: int, out: Callable[[str], None] | None, tail: deque[str]) -> None:
    buf = b""
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                tail.append(line)
                if out is not None:
                    out(line)
    if buf:
        line = buf.decode(errors="replace")
        tail.append(line)
        if out is not None:
            out(line)


def _exists(lowers: list[Path], dst: str) -> bool:
    rel = dst.strip("/")
    return any(os.path.lexists(lower / rel) for lower in lowers)


Take = Callable[[Path, set[str], Callable[[int], int] | None], bool]


def run_step(store: Containers, req: RunRequest, take: Take, *, where: str,
             progress: Callable[[str], None] | None) -> bool:
    """Run the step, then hand its upper dir to ``take`` (with the mount points to leave out and the
    host → image id map, None when it is read inside the user namespace); returns what ``take`` does."""
    opts = CreateOptions(image=f"build:{req.label or 'step'}", command=req.args, entrypoint=[], env=req.env,
                         workdir=req.workdir or "/", user=req.user, net=req.network, init=True,
                         auto_remove=True, labels={BUILD_LABEL: "1"},  # --rm: GC takes a killed build's
                         volatile=True)  # as buildah's RUN: one syncfs makes the layer durable before its commit
    volumes = [f"{src}:{dst}:{'ro' if ro else 'rw'}" for src, dst, ro in req.binds]
    opts.volumes = volumes
    with phase("run.create"):
        c = create_container(store, _Layers(req), opts)
    try:
        r, w = os.pipe()
        tail: deque[str] = deque(maxlen=20)
        reader = threading.Thread(target=_reader, args=(r, progress, tail), daemon=True)
        reader.start()
        try:
            with phase("run.command"):
                code = tasks.start_attached(store, c, interactive=False, tty=False, stdout=w, stderr=w)
        finally:
            os.close(w)
            reader.join()
        if code != 0:
            shown = "\n".join(f"  {line}" for line in list(tail)[-10:])
            cmd = req.args[-1] if len(req.args) > 1 and req.args[-2] == "-c" else " ".join(req.args)
            raise RunFailed(f"{where}: RUN {cmd!r} failed with exit code {code}"
                            + (f"; last output:\n{shown}" if shown else ""),
                            hint="see docs/build.md, 'Debugging a failing step'")
        skip: set[str] = set()
        for dst in [d for _, d, _ in req.binds] + ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]:
            parts = dst.strip("/").split("/")
            for i in range(len(parts), 0, -1):  # the mount point and the parents made for it
                rel = "/".join(parts[:i])
                if _exists(req.lowers, rel):
                    break
                skip.add(rel)
        bundle = store.bundle(c.id)
        unmount_rootfs(bundle, store.keeper)  # the upper dir is left alone from here on
        id_of: Callable[[int], int] | None = None
        if store.keeper is None:
            base = c.idmap.host_uid(0)  # one range: container id n is host id base + n (uids and gids alike)
            id_of = lambda i: i - base if i >= base else i  # noqa: E731
        return take(bundle / "upper", skip, id_of)
    finally:
        with phase("run.remove"), contextlib.suppress(FlexError):
            store.remove(c.id, force=True)
