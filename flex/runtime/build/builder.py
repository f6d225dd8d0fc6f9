"""Executing a Dockerfile: stages in order, each instruction a cached step on the runtime.

Steps that change only the config (ENV, LABEL, USER, ...) make no layer; RUN, COPY, ADD and a
WORKDIR that must create its directory make one. Every step's key goes into the cache; a hit reuses
the state after the step (its layers are committed snapshots already). New layers are stored as a
zstd (or gzip) blob and applied to a snapshot like a pulled layer, all under the build's lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.errors import InvalidArgument, NotFound
from flex.runtime.build.cache import BuildCache
from flex.runtime.build.dockerignore import Ignore
from flex.runtime.build.expand import expand_word, expand_words
from flex.runtime.build.layer import LayerBlob, source_date_epoch, store_layer
from flex.runtime.build.merged import MergedView
from flex.runtime.build.parser.instruction import Instruction
from flex.runtime.build.settings import BuildSettings
from flex.runtime.build.stages import Stage
from flex.runtime.build.state import State, step_key
from flex.runtime.build.timings import phase
from flex.runtime.containers.store import Containers
from flex.runtime.images.store import ImageStore, host_platform
from flex.runtime.leases.leases import Lease

__all__ = ["Builder", "StepContext"]

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class StepContext:
    images: ImageStore
    containers: Containers
    cache: BuildCache
    held: Lease
    context: Path
    ignore: Ignore
    settings: BuildSettings
    build_args: dict[str, str]
    secrets: dict[str, Path]
    no_cache: bool
    compression: str
    progress: Callable[[str], None] | None
    stage_states: dict[int, State]
    stages: list[Stage]


class Builder:
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.epoch = source_date_epoch()
        self.cleanup: list[Path] = []  # temporary files (downloads) removed when the build ends
        self._held: set[tuple[str, str]] = set()

    def hold(self, kind: str, ref: str) -> None:
        """Hold ``ref`` under the build's lease (once: a cache hit must cost no more than a lookup)."""
        if (kind, ref) not in self._held:
            self.ctx.held.add(kind, ref)
            self._held.add((kind, ref))

    def say(self, line: str) -> None:
        if self.ctx.progress is not None:
            self.ctx.progress(line)

    # -- layers -----------------------------------------------------------------------------------
    def add_layer(self, state: State, tar_path: Path) -> LayerBlob:
        with phase("layer.store"):
            blob = store_layer(self.ctx.images, tar_path, self.ctx.held, compression=self.ctx.compression)
        self.unpack_blob(state, blob)
        return blob

    def chain(self, state: State, diff_id: str) -> str:
        parent = state.top
        return diff_id if parent is None else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()

    def unpack_blob(self, state: State, blob: LayerBlob) -> None:
        """Apply the stored blob as ``state``'s next layer, as a pulled layer is."""
        from flex.runtime.unpack.unpacker import unpack_layer

        self.ctx.held.add("snapshot", self.chain(state, blob.diff_id))
        applier = None
        helper = None
        if self.ctx.images.snapshots.ownership != "unshifted":
            from flex.runtime.unpack.userns import UsernsApplier

            helper = UsernsApplier()
            applier = helper
        try:
            with phase("layer.unpack"):
                unpack_layer(self.ctx.images.snapshots, self.ctx.images.content.path(blob.digest), blob.diff_id,
                             state.top, applier=applier, on_key=lambda k: self.ctx.held.add("snapshot", k))
        finally:
            if helper is not None:
                helper.close()
        self.append_layer(state, blob)

    def append_layer(self, state: State, blob: LayerBlob) -> None:
        state.layers.append({"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size,
                             "diffId": blob.diff_id})

    def lookup(self, key: str, state: State) -> State | None:
        if self.ctx.no_cache:
            return None
        saved = self.ctx.cache.get(key)
        if saved is None:
            return None
        restored = state.restore(key, saved)
        for lay in restored.layers:
            if not self.ctx.images.content.exists(lay["digest"]):
                return None
        top = restored.top
        if top is not None:
            try:
                if self.ctx.images.snapshots.stat(top).kind.value != "committed":
                    return None
            except NotFound:
                return None
            self.hold("snapshot", top)
        for lay in restored.layers:
            self.hold("content", lay["digest"])
        return restored

    def record(self, state: State) -> None:
        res = [("content", lay["digest"]) for lay in state.layers]
        if state.top:
            res.append(("snapshot", state.top))
        self.ctx.cache.put(state.key, state.saved(), res)

    def history(self, state: State, created_by: str, empty: bool) -> None:
        entry: dict[str, Any] = {"created": self.created(), "created_by": created_by}
        if empty:
            entry["empty_layer"] = True
        entry["comment"] = "flex build"
        state.history.append(entry)

    def created(self) -> str:
        import time

        t = self.epoch if self.epoch is not None else int(time.time())
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    # -- FROM -------------------------------------------------------------------------------------
    def start(self, stage: Stage, meta: dict[str, str]) -> State:
        from flex.runtime.build.stages import stage_by_ref

        dep = stage_by_ref(self.ctx.stages, stage.base, stage.index)
        plat = host_platform()
        if stage.platform:
            from flex.runtime.images.store import parse_platform, platform_text

            want = parse_platform(stage.platform)
            if (want["os"], want["architecture"]) != (plat["os"], plat["architecture"]):
                raise InvalidArgument(f"{stage.from_instruction.where}: --platform={stage.platform}: this host "
                                      f"builds {platform_text(plat)} only", hint="drop --platform, or build on "
                                      "such a host")
        if dep is not None:
            parent = self.ctx.stage_states[dep.index]
            st = State(key=step_key(parent.key, "FROM-stage"), layers=list(parent.layers),
                       config=json.loads(json.dumps(parent.config)), history=list(parent.history),
                       platform=dict(parent.platform))
        elif stage.base == "scratch":
            st = State(key=step_key("scratch"), platform=plat,
                       config={"Env": [f"PATH={DEFAULT_PATH}"]})
        else:
            img = self._image(stage.base, stage.from_instruction)
            cfg = img.config
            layers = [{"mediaType": d.media_type, "digest": d.digest, "size": d.size, "diffId": diff}
                      for d, diff in zip(img.manifest.layers, img.diff_ids, strict=True)]
            for lay in layers:
                self.hold("content", lay["digest"])
            if img.top_snapshot:
                self.hold("snapshot", img.top_snapshot)
            platform = {"os": str(cfg.get("os", "linux")), "architecture": str(cfg.get("architecture", ""))}
            if cfg.get("variant"):
                platform["variant"] = str(cfg["variant"])
            st = State(key=step_key("image", img.manifest.config.digest), layers=layers,
                       config=json.loads(json.dumps(cfg.get("config") or {})), history=list(cfg.get("history") or []),
                       platform=platform)
            st.config.setdefault("Env", [f"PATH={DEFAULT_PATH}"])
            self._onbuild(st, stage)
        st.meta_args = meta
        return st

    def _image(self, ref: str, ins: Instruction) -> Any:
        try:
            return self.ctx.images.get(ref)
        except NotFound:
            pass
        except InvalidArgument as err:
            raise InvalidArgument(f"{ins.where}: {err.message}", hint=err.hint) from None
        from flex.runtime.base.progress import NullProgress
        from flex.runtime.transfer.pull import pull

        self.say(f"pulling {ref}")
        return pull(self.ctx.images, ref, progress=NullProgress())

    def _onbuild(self, st: State, stage: Stage) -> None:
        triggers = st.config.pop("OnBuild", None) or []
        if triggers:
            from flex.runtime.build.parser.dockerfile import parse_dockerfile

            parsed = parse_dockerfile("\n".join(triggers), file=f"{stage.base} ONBUILD")
            for ins in parsed:
                ins.line = stage.from_instruction.line
                ins.file = stage.from_instruction.file
            stage.instructions[:0] = parsed

    # -- steps ------------------------------------------------------------------------------------
    def words(self, ins: Instruction, state: State) -> list[str]:
        return expand_words(ins.args[0], {**state.args, **state.env()}, where=ins.where)

    def word(self, text: str, ins: Instruction, state: State) -> str:
        return expand_word(text, {**state.args, **state.env()}, where=ins.where)

    def tmp_tar(self) -> Path:
        fd, path = tempfile.mkstemp(prefix="build-layer-", suffix=".tar", dir=self.ctx.images.home.tmp)
        os.close(fd)
        return Path(path)

    def with_tar(self, state: State, make: Callable[[Path], int]) -> bool:
        """Run ``make`` into a temporary tar; store it as a layer unless it is empty. True if a layer."""
        tar = self.tmp_tar()
        try:
            if make(tar) == 0:
                return False
            self.add_layer(state, tar)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tar.unlink()

    # -- other stages and images as sources --------------------------------------------------------
    def source_state(self, ref: str, ins: Instruction) -> State:
        """The state of stage ``ref`` (built before this one), or of the image ``ref``."""
        from flex.runtime.build.stages import stage_by_ref

        dep = stage_by_ref(self.ctx.stages, ref, len(self.ctx.stages))
        if dep is not None:
            if dep.index not in self.ctx.stage_states:
                raise InvalidArgument(f"{ins.where}: --from={ref}: stage {ref!r} comes after this one",
                                      hint="a stage can only use stages defined before it")
            return self.ctx.stage_states[dep.index]
        img = self._image(ref, ins)
        layers = [{"mediaType": d.media_type, "digest": d.digest, "size": d.size, "diffId": diff}
                  for d, diff in zip(img.manifest.layers, img.diff_ids, strict=True)]
        if img.top_snapshot:
            self.ctx.held.add("snapshot", img.top_snapshot)
        return State(key=step_key("image", img.manifest.config.digest), layers=layers)

    def view(self, state: State) -> MergedView:
        lowers = self.ctx.images.snapshots.lowers(state.top) if state.top else []
        prefix = "trusted." if self.ctx.images.snapshots.ownership == "unshifted" else "user."
        return MergedView(lowers, prefix)

    def unshift(self) -> Callable[[int], int] | None:
        """Host id → image id for files read from snapshots (rootless stores keep shifted ids)."""
        own = self.ctx.images.snapshots.ownership
        if own == "unshifted":
            return None
        from flex.runtime.unpack.userns import rootless_ranges

        uid, _gid, (su, nu), _ = rootless_ranges()

        def conv(i: int) -> int:
            if i == uid:
                return 0
            if su <= i < su + nu:
                return i - su + 1
            return 65534
        return conv
