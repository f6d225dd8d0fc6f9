"""The ImageReady step's build, for one environment: built once per generation (a marker in the
environment's state says which image that generation got, so a later reconcile neither rebuilds nor
flips the phase), output appended to ``FLEX_HOME/runner/logs/<env id>/build.log``, and a failure
remembered for its generation like a failed hook, so periodic resyncs do not rerun a failing step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.atomic import write_atomic
from flex.devcontainer.config import ResolvedConfig
from flex.errors import NotFound

__all__ = ["BuildFailed", "BuiltImage", "build_log_path", "cached_build", "ensure_environment_image"]

_TAIL_LINES = 20


@dataclass(frozen=True)
class BuiltImage:
    image: str
    metadata: list[dict[str, Any]]
    merged: dict[str, Any]
    digest: str = ""  # the built image's manifest digest: a rebuild that changed it means a new container


class BuildFailed(Exception):
    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.message, self.retry = message, retry


def _now() -> str:
    """UTC to the millisecond: build.log's start and end lines show which builds overlapped (--max-builds)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def build_log_path(home: Path, env_id: str) -> Path:
    return home / "runner" / "logs" / env_id / "build.log"


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_TAIL_LINES:])[-2000:]


def cached_build(state: Path, generation: int) -> BuiltImage | None:
    try:
        data = json.loads((state / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("generation") != generation:
        return None
    from flex.runner.build.image import open_image_store

    try:
        open_image_store().get(data["image"])
    except NotFound:
        return None
    return BuiltImage(data["image"], data["metadata"], data["merged"], str(data.get("digest", "")))


def ensure_environment_image(resolved: ResolvedConfig, *, home: Path, env_id: str, state: Path,
                             generation: int, starting: Any) -> BuiltImage:
    """The environment's built image; ``starting()`` is called just before a build actually runs.

    The build runs as `flex build` in a child process (its RUN steps attach to containers and forward
    signals, which only a main thread may do; and a fork of the multi-threaded runner could inherit a
    held lock), its output appended to build.log as it comes."""
    done = cached_build(state, generation)
    if done is not None:
        return done
    failed = state / "build.failed"
    try:
        prev = json.loads(failed.read_text())
    except (OSError, ValueError):
        prev = {}
    if prev.get("generation") == generation:
        raise BuildFailed(str(prev.get("message", "the build failed")), retry=False)
    starting()
    log = build_log_path(home, env_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "FLEX_DEBUG"}
    argv = [sys.executable, "-m", "flex", "build", "--workspace-folder", resolved.local_workspace_folder,
            "--config", resolved.workspace.config_file, "--no-lockfile", "--json"]
    owner = _owner_inside(resolved.local_workspace_folder)
    if owner is not None and owner[0] != 0:  # uid 0 is root's: updateRemoteUserUID has nothing to do
        argv += ["--remote-user-uid", f"{owner[0]}:{owner[1]}"]
    with open(log, "a", encoding="utf-8", errors="replace") as out:
        out.write(f"=== build of generation {generation} at {_now()}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, text=True,
                              env=env, cwd="/", errors="replace")
        out.write(f"=== build of generation {generation} ended at {_now()} (exit code {proc.returncode})\n")
    try:
        outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        outcome = {"outcome": "error", "message": f"flex build exited with code {proc.returncode}"}
    if outcome.get("outcome") != "success":
        tail = _tail(log)
        message = str(outcome.get("message") or "the build failed")
        full = f"{message}; the build's output ends with:\n{tail}" if tail else message
        if proc.returncode != 6:  # 6: unavailable (a registry down): may heal, retried with backoff
            write_atomic(failed, json.dumps({"generation": generation, "message": full}))
        raise BuildFailed(full, retry=proc.returncode == 6)
    name = str(outcome["imageName"][0])
    built = _with_metadata(resolved, name)
    failed.unlink(missing_ok=True)
    write_atomic(state / "build.json", json.dumps({"generation": generation, "image": built.image,
                                                   "metadata": built.metadata, "merged": built.merged,
                                                   "digest": built.digest}))
    return built


def _owner_inside(folder: str) -> tuple[int, int] | None:
    """The workspace owner's ids inside a rootless container (the runner's user is root there, its subordinate
    range 1..N), for updateRemoteUserUID; None for a root runner, which gives the workspace to the container's
    root (reconcile's shift), or an owner outside the map."""
    if os.geteuid() == 0:
        return None
    from flex.errors import FlexError
    from flex.runtime.userns.idmap import rootless_map

    try:
        st, idmap = os.stat(folder), rootless_map()
    except (OSError, FlexError):
        return None

    def inside(host: int, ranges: tuple[tuple[int, int, int], ...]) -> int | None:
        return next((i + host - o for i, o, n in ranges if o <= host < o + n), None)

    uid, gid = inside(st.st_uid, idmap.uids), inside(st.st_gid, idmap.gids)
    return (uid, gid) if uid is not None and gid is not None else None


def _with_metadata(resolved: ResolvedConfig, name: str) -> BuiltImage:
    """The built image's metadata: its label (features' images carry every entry, the config's last); an
    image built from a Dockerfile alone carries its base's entries, and the config's are added."""
    from flex.devcontainer.features.merge import LABEL, merge_configuration, metadata_entries, parse_label
    from flex.runner.build.image import open_image_store

    config = resolved.configuration
    image = open_image_store().get(name)
    labelled = parse_label(((image.config.get("config") or {}).get("Labels") or {}).get(LABEL))
    entries = labelled if config.get("features") else metadata_entries(labelled, [], config)
    return BuiltImage(name, entries, merge_configuration(config, entries), image.manifest_digest)
