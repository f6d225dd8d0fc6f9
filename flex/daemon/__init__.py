"""The local daemon behind `flex up` on a laptop: one process holding an embedded control plane (SQLite) and an
embedded desktop runner, serving the API on a unix socket under FLEX_HOME/daemon/.

It is a composition root, like flex/runner/agent.py: it imports controlplane, runner and runtime; nothing but
flex.cli imports it (an import-linter contract in pyproject.toml). The names below load on first use, so
`flex ls`'s fast path (flex/cli/fast_ls.py) reads DaemonPaths without importing httpx and the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flex.daemon.paths import DaemonPaths

if TYPE_CHECKING:
    from flex.daemon.control import (
        DaemonInfo,
        daemon_client,
        daemon_info,
        ensure_daemon,
        start_daemon,
        stop_daemon,
    )

__all__ = ["DaemonInfo", "DaemonPaths", "daemon_client", "daemon_info", "ensure_daemon", "start_daemon",
           "stop_daemon"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("flex.daemon.control"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
