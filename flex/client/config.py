"""Where the CLI finds the control plane: --server/--token, else FLEX_URL/FLEX_TOKEN, else the file that
`flex login` writes ($XDG_CONFIG_HOME/flex/client.json, mode 0600, written atomically)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from flex.errors import InvalidConfiguration, UsageError

__all__ = ["ClientConfig", "config_path", "load_config", "save_config"]


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flex" / "client.json"


def load_config(server: str | None = None, token: str | None = None) -> ClientConfig:
    server = server or os.environ.get("FLEX_URL") or None
    token = token or os.environ.get("FLEX_TOKEN") or None
    path = config_path()
    if (server is None or token is None) and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InvalidConfiguration(f"{path}: cannot read it: {err}", hint="run `flex login` again") from err
        if not isinstance(saved, dict):
            raise InvalidConfiguration(f"{path}: expected a JSON object", hint="run `flex login` again")
        server = server or saved.get("server")
        token = token or saved.get("token")
    if not server:
        raise UsageError("no control plane configured",
                         hint="run `flex login --server URL --token TOKEN`, or set FLEX_URL and FLEX_TOKEN")
    return ClientConfig(str(server).rstrip("/"), token)


def save_config(config: ClientConfig) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"server": config.server, "token": config.token}, indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path
