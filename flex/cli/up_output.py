"""What `flex up` prints once the environment is ready, from plain values: shared by the full command
(flex/cli/up.py) and its lean path (flex/cli/fast_up.py), which must print the same bytes. Imports only re.

    res = up_result_fields("app", {"remoteUser": "dev"}, "a827627a0e2b")
    ready_line("app", res) == "app: running as dev in /workspaces/app (container a827627a0e2b)"
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ready_line", "short_container_id", "up_result_fields"]


def short_container_id(container_ready_message: str | None) -> str | None:
    """The short id the runner's ContainerReady condition names: ``container NAME (a827627a0e2b)``."""
    m = re.search(r"\(([0-9a-f]{12,64})\)", container_ready_message) if container_ready_message else None
    return m.group(1) if m else None


def up_result_fields(name: str, config: dict[str, Any], container_id: str | None) -> dict[str, Any]:
    """What `devcontainer up` prints on success, plus flex's ``environment``."""
    user = config.get("remoteUser") or config.get("containerUser") or "root"
    folder = config.get("workspaceFolder") or f"/workspaces/{name}"
    return {"outcome": "success", "containerId": container_id, "remoteUser": user,
            "remoteWorkspaceFolder": folder, "environment": name}


def ready_line(name: str, res: dict[str, Any]) -> str:
    """The plain mode's last line (on stderr)."""
    return (f"{name}: running as {res['remoteUser']} in {res['remoteWorkspaceFolder']}"
            + (f" (container {res['containerId']})" if res["containerId"] else ""))
