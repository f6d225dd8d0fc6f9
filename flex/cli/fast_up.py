"""`flex up [PATH] [--json]` of an unchanged folder on the local daemon without typer, httpx, pydantic or
jsonschema (issue 16: the second `up` in well under a fifth of a second).

The folder is read as the full command reads it (flex/cli/up_source.py's ``desired``, so the same name,
source and configHash), but without the schema; then two requests over the daemon's socket: /readyz, and the
environment. Only when the environment's spec is what `up` would send (no patch: the same source, devcontainer
path, desiredPhase, docker and configHash) and it is Ready at its generation does this path print — the same
line, or the same JSON, as the full command. The configHash covers the config's bytes (and the Dockerfile and
local features beside it), so its match proves the config is the one a full `up` validated and the runner made
the container from; a config that reads the host's environment (``${localEnv:...}``) is not a function of its
bytes and is left to the full command. git's identity is not read: an unchanged `up` copies it nowhere, and
what git prints cannot hold what git_identity refuses (a line break).

Anything else returns None before a byte is printed, and the full command (flex/cli/up.py) runs instead: any
option but --json, FLEX_DEBUG, a configured control plane, a git URL, no running daemon (the full command
starts it), a daemon that does not answer, no such environment, any change, an environment not Ready, and
anything the schema might refuse (the full command then reports it with the documented exit code).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flex.cli.fast_http import remote_configured, unix_get

if TYPE_CHECKING:
    from flex.cli.up_source import Desired

__all__ = ["fast_up", "unchanged_and_ready"]


class _Watched(Mapping[str, str]):
    """The host's environment, noting whether the config's substitution read it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.read = False

    def __getitem__(self, key: str) -> str:
        self.read = True
        return self._env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read = True
        return self._env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        self.read = True
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _condition(env: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (env.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == type_), None)


def unchanged_and_ready(env: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Would the full command send no patch for ``spec`` (flex/cli/up.py's apply and _patch), and find the
    environment (wire form) Ready (flex/cli/up_wait.py's is_ready)?"""
    have, meta, status = env.get("spec") or {}, env.get("metadata") or {}, env.get("status") or {}
    source = {k: v for k, v in (have.get("source") or {}).items() if v is not None}
    if source != spec["source"] or meta.get("deletionTimestamp") is not None:
        return False
    if any(have.get(k) != v for k, v in spec.items() if k not in ("source", "devcontainer")):
        return False
    if (have.get("devcontainer") or {}).get("path") != spec.get("devcontainer", {"path": None}).get("path"):
        return False
    ready = _condition(env, "Ready")
    return (status.get("observedGeneration") == meta.get("generation") and status.get("phase") == "running"
            and ready is not None and ready.get("status") == "True")


def _read(path: str | None) -> Desired | None:
    from flex.cli.up_source import desired, is_git_url

    if path is not None and is_git_url(path):
        return None
    watched = _Watched(os.environ)
    try:
        want = desired(path, None, None, remote=False, env=watched, validate=False)
    except Exception:  # a FlexError, or what the schema would refuse: the full command reports it
        return None
    return None if watched.read else want


def _daemon() -> tuple[str, str] | None:
    """(socket, token) of a running daemon as flex/daemon/control.py's daemon_info reads it; None: not running."""
    from flex import __version__
    from flex.daemon.paths import DaemonPaths
    from flex.home import flex_home
    from flex.pids import pid_alive

    paths = DaemonPaths(flex_home())
    try:
        s = json.loads(paths.state.read_text())
        pid, _ = int(s["pid"]), float(s["startedAt"])
        if not isinstance(s["socket"], str) or "runnerId" not in s or not pid_alive(pid):
            return None
        if s.get("version") != __version__:
            return None  # a daemon left from before an upgrade: the full command restarts it
        return str(paths.socket), paths.token_file.read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _container_id(env: dict[str, Any], short: str | None, full_id: bool) -> tuple[str | None] | None:
    """flex/cli/up.py's _container_id for the local daemon: the runtime's full id (--json), else the short one;
    None when only the runtime's store can say (the full command asks it)."""
    if not full_id or not short:
        return (short,)
    from flex.runtime.base.home import Home
    from flex.runtime.containers.lookup import recorded_container_id

    try:
        full = recorded_container_id(Home.open().db_path, f"flex-{env['metadata']['id']}")
    except (OSError, KeyError, TypeError):
        return None
    if full is None:
        return None
    return (full if full.startswith(short) else short,)


def _up(path: str | None, json_: bool) -> int | None:
    from flex.cli.up_output import ready_line, short_container_id, up_result_fields

    daemon = _daemon()
    if daemon is None:
        return None
    want = _read(path)
    if want is None:
        return None
    sock, token = daemon
    try:
        if unix_get(sock, "/readyz", token) is None:
            return None
        body = unix_get(sock, f"/api/v1/environments/{quote(want.name, safe='')}", token)
        env = json.loads(body) if body is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(env, dict) or not unchanged_and_ready(env, want.spec):
        return None
    ctr = _condition(env, "ContainerReady")
    cid = _container_id(env, short_container_id(ctr.get("message") if ctr else None), json_)
    if cid is None:
        return None
    res = up_result_fields(want.name, want.config, cid[0])
    if json_:
        print(json.dumps(res), flush=True)
    else:
        print(ready_line(want.name, res), file=sys.stderr, flush=True)
    return 0


def fast_up(argv: Sequence[str]) -> int | None:
    """``flex up [PATH] [--json]`` when nothing changed; None when the full command must answer."""
    args = list(argv)
    if args[:1] != ["up"] or os.environ.get("FLEX_DEBUG") == "1" or remote_configured():
        return None
    rest = args[1:]
    json_ = rest.count("--json") == 1
    if json_:
        rest.remove("--json")
    if len(rest) > 1 or any(a.startswith("-") for a in rest):
        return None
    try:
        return _up(rest[0] if rest else None, json_)
    except KeyboardInterrupt:  # as the full command says it (flex/cli/up.py)
        print("\nstopped waiting; the environment keeps going: see `flex show `", file=sys.stderr)
        return 130
    except BrokenPipeError:  # as flex/cli/main.py
        return 0
