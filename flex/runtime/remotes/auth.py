"""Registry credentials and the WWW-Authenticate challenge.

Credentials come from `flex login` (FLEX_AUTH_FILE, default $XDG_CONFIG_HOME/flex/auth.json, mode 0600,
written atomically) and then from Docker's config ($DOCKER_CONFIG/config.json or ~/.docker/config.json):
a credential helper named for the host in ``credHelpers``, else the ``credsStore`` helper, else
``auths.<host>`` (base64 ``auth`` user:password, or an ``identitytoken``). A helper is Docker's
``docker-credential-NAME get`` (server URL on stdin, ``{"Username", "Secret"}`` on stdout); the
user name ``<token>`` marks an identity token (OAuth2 refresh token). Imports nothing from flex but
flex.errors.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.atomic import write_atomic
from flex.errors import FailedPrecondition, InvalidConfiguration

__all__ = ["IDENTITY_TOKEN_USER", "Challenge", "Credentials", "credential_helper", "flex_auth_file",
           "lookup_credentials", "parse_challenge", "remove_login", "save_login"]

IDENTITY_TOKEN_USER = "<token>"  # Docker's marker: the secret is an identity (refresh) token
_HELPER_TIMEOUT = 60.0  # a helper may ask a cloud CLI for a fresh token
_NOT_FOUND = "credentials not found in native keychain"  # docker-credential-helpers' ErrCredentialsNotFound


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
    if entry.get("identitytoken"):
        return Credentials(IDENTITY_TOKEN_USER, str(entry["identitytoken"]))
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


def _server_url(registry: str) -> str:
    """What Docker hands a helper (and keys ``auths`` by) for a registry."""
    return "https://index.docker.io/v1/" if registry == "docker.io" else registry


def credential_helper(name: str, registry: str, where: str) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for a registry's credentials; None if it has none."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InvalidConfiguration(f"{where}: invalid credential helper name {name!r}")
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        # Docker fails here too: pulling anonymously instead would hide why a private image is "not found"
        raise FailedPrecondition(f"{where} names credential helper docker-credential-{name}, which is not on PATH",
                                 hint=f"install docker-credential-{name} or remove it from {where}")
    try:
        proc = subprocess.run([exe, "get"], input=_server_url(registry), capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FailedPrecondition(f"credential helper docker-credential-{name} failed for {registry}: {err}") from err
    out = proc.stdout.strip()
    if proc.returncode != 0:
        if _NOT_FOUND in out or _NOT_FOUND in proc.stderr:
            return None
        detail = (out or proc.stderr.strip()).splitlines()
        raise FailedPrecondition(f"credential helper docker-credential-{name} failed for {registry} "
                                 f"(exit {proc.returncode}): {detail[-1] if detail else 'no output'}")
    try:
        answer = json.loads(out)
        user, secret = answer.get("Username"), answer.get("Secret")
    except (ValueError, AttributeError) as err:
        raise FailedPrecondition(f"credential helper docker-credential-{name} answered for {registry} "
                                 "with something other than a JSON object") from err
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    return Credentials(user, secret)


def _from_docker_config(registry: str) -> Credentials | None:
    path = _docker_config()
    data = _load(path)
    helpers = data.get("credHelpers") or {}
    helper, where = None, ""
    if isinstance(helpers, dict):
        key = next((k for k in _host_keys(registry) if isinstance(helpers.get(k), str) and helpers[k]), None)
        if key is not None:
            helper, where = str(helpers[key]), f"{path} (credHelpers.{key})"
    store = data.get("credsStore")
    if helper is None and isinstance(store, str) and store:
        helper, where = store, f"{path} (credsStore)"
    if helper is not None:
        creds = credential_helper(helper, registry, where)
        if creds is not None:
            return creds
    # a helper that knows nothing of the host leaves the plain entries (Docker keeps empty ones there)
    return _from_auths(data, path, registry)


def _from_auths(data: dict[str, Any], path: Path, registry: str) -> Credentials | None:
    auths = data.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    for key in _host_keys(registry):
        if key in auths:
            creds = _decode(auths[key], path, key)
            if creds:
                return creds
    return None


def lookup_credentials(registry: str) -> Credentials | None:
    """`flex image login` first, then Docker's config (helpers before ``auths``, as Docker does)."""
    path = flex_auth_file()
    return _from_auths(_load(path), path, registry) or _from_docker_config(registry)


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
