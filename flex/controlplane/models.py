"""The database tables (SQLModel). Changing one needs a migration in migrations/versions/.

Environment writes are serialized by the single ``revision`` row: a writer bumps it first, so the order of
commits is the order of resource versions, and the ``watch_events`` log has no holes a watcher could skip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["AuditRow", "BackupRow", "EnvironmentRow", "JoinTokenRow", "PolicyRow", "PreviewCredentialRow",
           "ReplicaRow", "Revision", "RunnerRow", "RunnerTunnelRow", "SecretRow", "TokenRow", "UiSessionRow", "UserRow",
           "WatchEventRow", "metadata"]

metadata = SQLModel.metadata


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=nullable)


class Revision(SQLModel, table=True):
    """One row: the last resource version handed out, and the newest one compacted out of the event log."""

    __tablename__ = "revision"
    id: int = Field(default=1, primary_key=True)
    rv: int = Field(default=0, sa_type=BigInteger)
    compacted: int = Field(default=0, sa_type=BigInteger)


class UserRow(SQLModel, table=True):
    __tablename__ = "users"
    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    admin: bool = False
    groups: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class TokenRow(SQLModel, table=True):
    """An API token of a user; only the sha256 of the secret is kept."""

    __tablename__ = "tokens"
    id: str = Field(primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True)
    name: str
    hash: str = Field(unique=True, index=True)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)


class JoinTokenRow(SQLModel, table=True):
    """A single-use runner join token (hashed)."""

    __tablename__ = "join_tokens"
    hash: str = Field(primary_key=True)
    created_by: str
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)
    runner_id: str | None = None
    allowance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # api.RunnerGrant


class RunnerRow(SQLModel, table=True):
    __tablename__ = "runners"
    id: str = Field(primary_key=True)
    name: str = Field(unique=True, index=True)
    kind: str
    cpus: float
    memory: int = Field(sa_type=BigInteger)
    disk: int = Field(sa_type=BigInteger)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = "ready"
    credential_hash: str = Field(unique=True, index=True)
    last_heartbeat: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    owner: str | None = Field(default=None, index=True)  # a personal runner: only this user's environments
    allowance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # api.RunnerGrant
    cordoned: bool = False
    rootless: bool = False
    id_ranges: int = 0
    credential_expires_at: datetime | None = _ts(nullable=True)
    disk_pressure: bool = False
    idle_timeout: int | None = None  # issue 15: the runner's default for environments without spec.idleTimeout
    backup_repository: str | None = None  # issue 17.5: "shared" (the control plane's) or "own"


class PolicyRow(SQLModel, table=True):
    """One row (id 1, absent until an admin sets it): the installation's api.Policy."""

    __tablename__ = "policy"
    id: int = Field(default=1, primary_key=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class EnvironmentRow(SQLModel, table=True):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_environments_owner_name"),)
    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    name: str
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    generation: int = Field(default=1, sa_type=BigInteger)
    resource_version: int = Field(default=0, sa_type=BigInteger)
    runner_id: str | None = Field(default=None, index=True)
    # issue 17.5: during a move, the runner that still holds the environment's old copy (it sees the
    # environment, may not write its status, and removes its copy once the move is done)
    move_from: str | None = Field(default=None, index=True)
    req_cpus: float = 0
    req_memory: int = Field(default=0, sa_type=BigInteger)
    req_disk: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    deletion_timestamp: datetime | None = _ts(nullable=True)


class WatchEventRow(SQLModel, table=True):
    """The change log watchers read: one row per resource version, compacted from the old end."""

    __tablename__ = "watch_events"
    __table_args__ = (Index("ix_watch_events_owner_rv", "owner", "rv"),
                      Index("ix_watch_events_runner_rv", "runner_id", "rv"))
    rv: int = Field(primary_key=True, sa_type=BigInteger)
    type: str
    env_id: str
    owner: str
    runner_id: str | None = None
    move_from: str | None = None  # issue 17.5: the runner a move takes the environment from sees it too
    object: str = Field(sa_column=Column(Text, nullable=False))


class AuditRow(SQLModel, table=True):
    """Who did what; append-only (a trigger refuses UPDATE and DELETE). Never holds a secret."""

    __tablename__ = "audit"
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = _ts()
    actor: str = Field(index=True)
    action: str
    resource: str
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SecretRow(SQLModel, table=True):
    """A user's secret: the value only encrypted (AES-256-GCM with the server's key; ``key_id`` names that key)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_secrets_owner_name"),)
    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    name: str
    environments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    key_id: str
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))  # base64 of nonce + AES-GCM output
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class UiSessionRow(SQLModel, table=True):
    """A signed-in browser (the web UI): only the sha256 of the cookie; ends at ``expires_at``, after
    ``idle`` without use, at sign-out, or when the token it was opened with is revoked (it carries its scopes)."""

    __tablename__ = "ui_sessions"
    hash: str = Field(primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True)
    token_id: str = Field(index=True)
    csrf: str
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    last_seen_at: datetime = _ts()


class PreviewCredentialRow(SQLModel, table=True):
    """A preview URL's cookie (issue 15): only its sha256; good for one user, one environment and one port
    until ``expires_at``, or until the token it was minted from is revoked."""

    __tablename__ = "preview_credentials"
    hash: str = Field(primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True)
    token_id: str = Field(index=True)
    env_id: str = Field(index=True)
    port: int
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
class BackupRow(SQLModel, table=True):
    """A backup of an environment (issue 17): asked for by its owner (or made on stop/schedule/move), made by
    the runner it was bound to. Outlives the environment; ``spec`` is the environment's spec when asked for,
    so a restore can make the environment again after it is gone."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_owner_environment", "owner", "environment"),)
    id: str = Field(primary_key=True)
    env_id: str = Field(index=True)
    owner: str
    environment: str
    runner_id: str | None = None
    state: str = "pending"
    reason: str = "manual"
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    snapshot: str | None = None
    size: int = Field(default=0, sa_type=BigInteger)
    files: int = Field(default=0, sa_type=BigInteger)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _ts()
    completed_at: datetime | None = _ts(nullable=True)
    repository: str | None = None  # "shared" (the server's, any runner on it restores) or "own" (runner_id's)
    # issue 17: set when the environment is deleted; its last backup stays until then, the others are due at
    # once. Once due, the runner holding the repository forgets the snapshot, then the row goes.
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True, index=True)


class ReplicaRow(SQLModel, table=True):
    """A control-plane process and where the others reach it (issue 15); ``seen_at`` is its heartbeat."""

    __tablename__ = "replicas"
    id: str = Field(primary_key=True)
    url: str
    seen_at: datetime = _ts()


class RunnerTunnelRow(SQLModel, table=True):
    """Which replica holds a runner's tunnel (issue 15): written on attach, removed on detach."""

    __tablename__ = "runner_tunnels"
    runner_id: str = Field(primary_key=True)
    replica_id: str = Field(index=True)
    attached_at: datetime = _ts()
