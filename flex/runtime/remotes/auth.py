"""Registry credentials and the WWW-Authenticate challenge.

Credentials come from `flex login` (FLEX_AUTH_FILE, default $XDG_CONFIG_HOME/flex/auth.json, mode 0600,
written atomically) and then from Docker's config ($DOCKER_CONFIG/config.json or ~/.docker/config.json,
``auths.<host>.auth`` = base64 user:password). Credential helpers are not run. Imports nothing from
flex but flex.errors.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.atomic import write_atomic
from flex.errors import InvalidConfiguration

__all__ = ["Challenge", "Credentials", "flex_auth_file", "lookup_credentials", "parse_challenge", "remove_login",
           "save_login"]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"`` → Challenge."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


def flex_auth_file() -> Path:
    env = os.environ.get("FLEX_AUTH_FILE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "flex" / "auth.json"


def _docker_config() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_keys(registry: str) -> list[str]:
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    return keys


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except (FileNotFoundError, PermissionError):
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidConfiguration(f"{path}: not valid JSON ({err.msg} at line {err.lineno})",
                                   details={"file": str(path), "line": err.lineno}) from err
    return data if isinstance(data, dict) else {}


def _decode(entry: Any, path: Path, host: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    auth = entry.get("auth")
    if not auth:
        return None
    try:
        user, _, pw = base64.b64decode(str(auth)).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidConfiguration(f"{path}: auths.{host}.auth is not base64 user:password") from err
    return Credentials(user, pw)


def lookup_credentials(registry: str) -> Credentials | None:
    for path in (flex_auth_file(), _docker_config()):
        auths = _load(path).get("auths") or {}
        if not isinstance(auths, dict):
            continue
        for key in _host_keys(registry):
            if key in auths:
                creds = _decode(auths[key], path, key)
                if creds:
                    return creds
    return None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(data, indent=2), mode=0o600)


def save_login(registry: str, creds: Credentials) -> Path:
    path = flex_auth_file()
    data = _load(path)
    auths = data.setdefault("auths", {})
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[registry] = {"auth": token}
    _write_atomic(path, data)
    return path


def remove_login(registry: str) -> bool:
    path = flex_auth_file()
    data = _load(path)
    auths = data.get("auths") or {}
    if registry not in auths:
        return False
    del auths[registry]
    _write_atomic(path, data)
    return True
