"""Where an environment's files live on this machine, and removing them.

    FLEX_HOME/runner/volumes/<env id>/<env name>/   the workspace volume: cloned source, bind-mounted at the
                                                    workspace folder; kept across stop, start and restarts
    FLEX_HOME/runner/volumes/<env id>/.volumes/<n>/ the devcontainer's volume mounts (``type=volume``)
    FLEX_HOME/runner/state/<env id>/                what the runner remembers: source marker, hook markers,
                                                    an inline devcontainer.json
    FLEX_HOME/runner/logs/<env id>/hooks.log        lifecycle hooks' output, appended (for `logs`)
The workspace sits one level down so the reference CLI's default folder, /workspaces/<basename>, is
/workspaces/<env name>. Volumes and state go only on delete.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flex.runner.credential import runner_dir

__all__ = ["EnvPaths", "remove_tree"]


@dataclass(frozen=True)
class EnvPaths:
    home: Path
    env_id: str

    @property
    def volume(self) -> Path:
        return self.home / "runner" / "volumes" / self.env_id

    @property
    def state(self) -> Path:
        return self.home / "runner" / "state" / self.env_id

    @property
    def tmp(self) -> Path:
        return self.home / "runner" / "tmp"

    @property
    def logs(self) -> Path:
        return self.home / "runner" / "logs" / self.env_id

    @property
    def hooks_log(self) -> Path:
        return self.logs / "hooks.log"

    def workspace(self, name: str) -> Path:
        return self.volume / name

    def ensure(self) -> Path:
        """The volume and state directories (safe to repeat); returns the volume."""
        runner_dir(self.home)
        for d in (self.volume.parent, self.state.parent, self.tmp):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.volume.mkdir(mode=0o711, exist_ok=True)
        self.state.mkdir(mode=0o700, exist_ok=True)
        return self.volume

    def remove(self, as_namespace_root: Callable[[Callable[[], None], str], None] | None = None) -> None:
        for d in (self.volume, self.state, self.logs):
            remove_tree(d, as_namespace_root)


def remove_tree(path: Path, as_namespace_root: Callable[[Callable[[], None], str], None] | None = None) -> None:
    """rm -rf ``path``; rootless, files a container's other users made belong to subordinate ids, which only
    root inside the user's namespace may delete (``as_namespace_root``: the runtime keeper's ``call``)."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists() and as_namespace_root is not None:
        with contextlib.suppress(Exception):
            as_namespace_root(lambda: shutil.rmtree(path), f"removing {path}")
    if path.exists():
        shutil.rmtree(path)  # raises, saying what is left
