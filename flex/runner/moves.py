"""A runner's part in moving environments between runners (issue 17.5, flex/controlplane/moves.py has the
whole): which backup repository it uses, and what a move asks of it.

The repository: ``FLEX_BACKUP_REPO`` when set (the runner's own), else the control plane's shared one when it
has one (fetched over the runner's credential and kept in FLEX_HOME/runner/shared-backup.json and
shared-backup.key, both 0600), else FLEX_HOME/backups (its own). The runner says which in its heartbeat; a
move needs both runners on the shared one.

What a move asks (``spec.move``, the server's): the runner it comes ``from`` stops it and backs it up while the
phase is ``backup``; then it keeps its copy untouched (it may no longer write the status) until the phase is
``done``, and removes it then. The runner it goes ``to`` restores it from ``spec.move.backup``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from flex.api import BackupRepository, Environment
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.errors import NotFound

__all__ = ["Role", "Shared", "refresh_shared", "role", "shared"]

Role = Literal["stop-and-back-up", "keep-copy", "remove-copy"]


class Shared:
    """The files holding the shared repository this runner was given."""

    def __init__(self, home: Path) -> None:
        self.config = home / "runner" / "shared-backup.json"
        self.key = home / "runner" / "shared-backup.key"


def refresh_shared(client: FlexClient, runner_id: str, home: Path) -> Literal["shared", "own"]:
    """Ask the control plane for its shared repository and keep it (or forget it: the server has none now)."""
    files = Shared(home)
    try:
        repo: BackupRepository | None = client.runner_backup_repository(runner_id)
    except NotFound:
        repo = None
    if repo is None:
        files.config.unlink(missing_ok=True)
        files.key.unlink(missing_ok=True)
    else:
        files.config.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        write_atomic(files.key, repo.password + "\n", mode=0o600)
        write_atomic(files.config, json.dumps({"location": repo.location, "env": repo.env}), mode=0o600)
    return "own" if os.environ.get("FLEX_BACKUP_REPO") or repo is None else "shared"


def shared(home: Path) -> tuple[str, Path, dict[str, str]] | None:
    """(location, password file, store credentials) of the shared repository, unless FLEX_BACKUP_REPO says
    this runner keeps its own."""
    files = Shared(home)
    if os.environ.get("FLEX_BACKUP_REPO") or not files.config.exists() or not files.key.exists():
        return None
    data = json.loads(files.config.read_text())
    return str(data["location"]), files.key, {str(k): str(v) for k, v in (data.get("env") or {}).items()}


def role(env: Environment, runner_id: str) -> Role | None:
    """What ``env``'s move asks of this runner; None when nothing beyond the usual."""
    move = env.spec.move
    if move is None or move.from_ != runner_id or move.to == runner_id:
        return None
    if move.phase == "backup":
        return "stop-and-back-up"
    return "keep-copy" if move.phase == "restore" else "remove-copy"
