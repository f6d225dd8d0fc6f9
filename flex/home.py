"""FLEX_HOME: where flex keeps its state on this machine. Shared by every layer, like flex.errors.

$FLEX_HOME when set; else /var/lib/flex for root; else $XDG_DATA_HOME/flex (~/.local/share/flex).
The runtime keeps its files there, the server in FLEX_HOME/server/, the runner in FLEX_HOME/runner/.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["flex_home"]


def flex_home() -> Path:
    env = os.environ.get("FLEX_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/flex")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "flex"
