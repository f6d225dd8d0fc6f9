"""Where the runtime keeps its state: FLEX_HOME and the directories below it.

FLEX_HOME defaults to /var/lib/flex for root and $XDG_DATA_HOME/flex (~/.local/share/flex) for a user.
Run-time files (sockets, pids) live in FLEX_HOME/run when FLEX_HOME is set, so that tests and several
installs on one machine never share them; otherwise /run/flex or $XDG_RUNTIME_DIR/flex.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flex.home import flex_home

__all__ = ["Home", "default_home"]


def _is_root() -> bool:
    return os.geteuid() == 0


def default_home() -> Path:
    return flex_home()


@dataclass(frozen=True)
class Home:
    """The runtime's directories. Create with ``Home.open()``; every path below ``root``."""

    root: Path
    run: Path

    @classmethod
    def open(cls, root: Path | None = None) -> Home:
        root = (root or default_home()).resolve()
        if root != Path("/var/lib/flex") or "FLEX_HOME" in os.environ:
            run = root / "run"
        elif _is_root():
            run = Path("/run/flex")
        else:
            xdg_run = os.environ.get("XDG_RUNTIME_DIR")
            run = Path(xdg_run) / "flex" if xdg_run else Path(f"/tmp/flex-{os.getuid()}")
        home = cls(root=root, run=run)
        for d in (root, run, home.tmp):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return home

    @property
    def tmp(self) -> Path:
        """Scratch space on the same filesystem as the state, so renames into place are atomic."""
        return self.root / "tmp"

    @property
    def db_path(self) -> Path:
        return self.root / "runtime.db"

    def sub(self, name: str) -> Path:
        """A component's own directory (``content``, ``snapshots``, ``containers``, ...), created on first use."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
