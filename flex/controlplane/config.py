"""Settings of one control-plane process (pydantic-settings, ``FLEX_SERVER_*`` environment variables).

Where a setting comes from, first match wins: the arguments (flags of `flex server`), a ``FLEX_SERVER_<NAME>``
environment variable, the TOML file ``$FLEX_SERVER_CONFIG`` (default ``$FLEX_ETC/server.toml``, FLEX_ETC
defaulting to /etc/flex; a missing file is no error), then the defaults below. The TOML keys are the field
names (``listen = "0.0.0.0:8080"``, ``db_url = "postgresql://..."``); an unknown key is an error, so a typo
never goes unnoticed. See docs/install.md.

FLEX_HOME follows the rule of flex/runtime/base/home.py (repeated here: the control plane never imports runtime):
$FLEX_HOME, else /var/lib/flex for root, else $XDG_DATA_HOME/flex (~/.local/share/flex). The server keeps
its files in FLEX_HOME/server/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from flex.api.environments import parse_duration
from flex.home import flex_home

__all__ = ["Settings", "config_file", "default_server_dir"]

MiB = 2**20


def default_server_dir() -> Path:
    return flex_home() / "server"


def config_file() -> Path:
    """The server's TOML settings file: $FLEX_SERVER_CONFIG, else $FLEX_ETC/server.toml (FLEX_ETC: /etc/flex)."""
    explicit = os.environ.get("FLEX_SERVER_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("FLEX_ETC") or "/etc/flex") / "server.toml"


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
    idle_timeout: float = 1800.0  # issue 15: stop an environment unused this long (spec.idleTimeout wins); 0: never
    ui_session_ttl: float = 12 * 3600.0  # a web UI sign-in lasts at most this long
    ui_session_idle: float = 2 * 3600.0  # and ends after this long unused
    public_url: str = ""  # how runners and people reach this server (behind a proxy: the proxy's URL)
    preview_cookie_ttl: float = 3600.0  # issue 15: a preview URL's cookie lasts at most this long
    # issue 17.5: a backup repository every runner reaches (a directory, or s3:http[s]://HOST/BUCKET[/PREFIX]),
    # given to runners over their credential with its password (server_dir/backup-repository.key, 0600) and
    # the S3 keys below; what lets a move restore one runner's backup on another. Empty: each runner its own.
    backup_repository: str = ""
    # issue 17: how long a deleted environment's last backup stays restorable (seconds, or "7d", "12h"); deleting
    # asks its runner for that backup first. 0: no backup on delete, and its backups go with it
    deleted_backup_retention: Annotated[float, Field(ge=0), BeforeValidator(parse_duration)] = 7 * 86400.0
    backup_repository_access_key: str = Field("", repr=False)
    backup_repository_secret_key: str = Field("", repr=False)
    advertise_url: str = ""  # issue 15: where other replicas reach this one; default: from `listen`
    replica_heartbeat: float = 5.0  # issue 15: a replica unseen for 3 of these holds no tunnels

    @field_validator("advertise_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL (e.g. http://10.0.0.5:8080)")
        return value

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file())

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
    def backup_repository_key(self) -> Path:
        return self.server_dir / "backup-repository.key"

    @property
    def advertise(self) -> str:
        """advertise_url, else the listen address (0.0.0.0 and :: as 127.0.0.1: right on one machine)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls_cert_file else 'http'}://{host}:{port}"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))
