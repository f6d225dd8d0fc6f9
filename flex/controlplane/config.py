"""Settings of one control-plane process (pydantic-settings, ``FLEX_SERVER_*`` environment variables).

FLEX_HOME follows the rule of flex/runtime/base/home.py (repeated here: the control plane never imports runtime):
$FLEX_HOME, else /var/lib/flex for root, else $XDG_DATA_HOME/flex (~/.local/share/flex). The server keeps
its files in FLEX_HOME/server/.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flex.home import flex_home

__all__ = ["Settings", "default_server_dir"]

MiB = 2**20


def default_server_dir() -> Path:
    return flex_home() / "server"


class Settings(BaseSettings):
    """Everything create_app() needs; nothing is read at import time."""

    model_config = SettingsConfigDict(env_prefix="FLEX_SERVER_")

    server_dir: Path = Field(default_factory=default_server_dir)
    db_url: str | None = Field(None, repr=False)  # default: sqlite file in server_dir; may hold a password
    listen: str = "127.0.0.1:8080"
    heartbeat_timeout: float = 30.0  # a runner silent this long is offline
    sweep_interval: float = 2.0  # offline detection, scheduling retries, event-log compaction
    event_retention: int = 100_000  # watch events kept; older resourceVersions answer 410
    max_body_bytes: int = 4 * MiB
    auth_failures_per_minute: int = 30  # per client address, then 429
    watch_keepalive: float = 15.0
    watch_queue: int = 10_000  # events buffered per watcher before it is told to re-list (410)
    join_token_ttl: float = 3600.0
    pool_size: int = 20
    credential_cache_ttl: float = 2.0  # a token revoked on another replica stops working within this
    runner_credential_ttl: float = 7 * 86400.0  # a runner credential lapses this long after its last heartbeat
    proxy_trusted_origins: str = ""  # comma-separated addresses/CIDRs whose X-Forwarded-For/-Proto count
    tls_cert_file: Path | None = None  # with tls_key_file: serve HTTPS
    tls_key_file: Path | None = None
    secret_key_file: Path | None = None  # default: server_dir/secret-key; replicas on one database share it

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.server_dir / 'flex.db'}"

    @property
    def admin_token_file(self) -> Path:
        return self.server_dir / "admin-token"

    @property
    def secret_key_path(self) -> Path:
        return self.secret_key_file or self.server_dir / "secret-key"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))
