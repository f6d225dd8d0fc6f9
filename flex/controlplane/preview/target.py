"""Which environment and port a preview path names, and who may reach it (issue 15)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from flex.controlplane.db import Database
from flex.controlplane.models import EnvironmentRow

__all__ = ["PATH", "Target", "find_target", "parse_preview_path", "preview_path", "preview_url"]

PATH = re.compile(r"^/p/([a-z0-9][-a-z0-9]{0,62})/([a-z0-9][-a-z0-9]{0,62})/([0-9]{1,5})(/.*)?$")


def preview_path(owner: str, env: str, port: int) -> str:
    return f"/p/{owner}/{env}/{port}/"


def preview_url(base: str, owner: str, env: str, port: int) -> str:
    """``status.ports[].url``: the server's public URL (or the request's base) + the preview path."""
    return base.rstrip("/") + preview_path(owner, env, port)


def parse_preview_path(path: str) -> tuple[str, str, int, str] | None:
    """``/p/alice/web/3000/x?y`` → (alice, web, 3000, /x?y); None when it is not one or the port is out of range."""
    m = PATH.match(path)
    if m is None or not 0 < int(m.group(3)) < 65536:
        return None
    return m.group(1), m.group(2), int(m.group(3)), m.group(4) or ""


@dataclass(frozen=True)
class Target:
    env_id: str
    owner: str
    name: str
    port: int
    runner_id: str | None
    public: bool
    running: bool  # desired and observed running: anything else is the 503 page


def _public(spec: dict[str, Any], status: dict[str, Any], port: int) -> bool:
    """spec.ports[].visibility decides; without a spec entry, the devcontainer's portsAttributes (the runner
    reports it in status.ports[].visibility); otherwise private."""
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and p.get("port") == port and p.get("visibility") in ("public", "private"):
            return bool(p["visibility"] == "public")
    for p in status.get("ports") or []:
        if isinstance(p, dict) and p.get("port") == port:
            return bool(p.get("visibility") == "public")
    return False


def find_target(db: Database, owner: str, name: str, port: int) -> Target | None:
    with db.read() as s:
        row = s.scalars(select(EnvironmentRow).where(EnvironmentRow.owner == owner, EnvironmentRow.name == name,
                                                     col(EnvironmentRow.deletion_timestamp).is_(None))).first()
        if row is None:
            return None
        spec, status = row.spec or {}, row.status or {}
        running = spec.get("desiredPhase", "running") == "running" and status.get("phase") == "running"
        return Target(row.id, row.owner, row.name, port, row.runner_id, _public(spec, status, port), running)
