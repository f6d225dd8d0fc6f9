"""Which control plane a verb talks to: one verb set, two places.

    --server URL (with --token), FLEX_URL, or the saved `flex login`   → that control plane
    none of these                                                      → the local daemon (`flex daemon`)

``connect(server, token, start=True)`` (what `flex up` does) starts the daemon when it is not running; read
verbs ask for a running one and say how to start it otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flex.client import FlexClient

__all__ = ["Target", "check_server_url", "connect", "endpoint", "resolve"]


@dataclass(frozen=True)
class Target:
    server: str | None  # None: the local daemon
    token: str | None

    @property
    def local(self) -> bool:
        return self.server is None


def check_server_url(url: str) -> str:
    from flex.errors import InvalidArgument

    if not url.startswith(("http://", "https://", "unix:")):
        raise InvalidArgument(f"server URL {url!r} has no http:// or https:// scheme",
                              hint=f"e.g. --server http://{url or 'host:8080'}")
    return url.rstrip("/")


def resolve(server: str | None, token: str | None) -> Target:
    from flex.client.config import config_path, load_config

    if server or token or os.environ.get("FLEX_URL") or config_path().exists():
        cfg = load_config(server, token)
        return Target(check_server_url(cfg.server), cfg.token)
    return Target(None, None)


def endpoint(server: str | None, token: str | None) -> tuple[str, str | None]:
    """The URL and token a stream (exec, logs, a port) opens to: the control plane configured, else the
    local daemon's unix socket (``unix:/path``), as `connect` chooses."""
    from flex.daemon import DaemonPaths, daemon_info
    from flex.errors import FailedPrecondition, Unavailable
    from flex.home import flex_home

    target = resolve(server, token)
    if target.server is not None:
        return target.server, target.token
    home = flex_home()
    if daemon_info(home) is None:
        raise Unavailable("the flex daemon is not running (and no control plane is configured)",
                          hint="start it with `flex daemon start` (`flex up` starts it), "
                               "or use a control plane with `flex login --server URL`")
    paths = DaemonPaths(home)
    try:
        return paths.url, paths.token_file.read_text().strip()
    except OSError as err:
        raise FailedPrecondition(f"cannot read the daemon's token {paths.token_file}: {err.strerror}",
                                 hint="start the daemon with `flex daemon start`") from None


def connect(server: str | None, token: str | None, *, start: bool = False,
            timeout: float = 30.0) -> tuple[FlexClient, Target]:
    from flex.client import FlexClient
    from flex.daemon import daemon_client, daemon_info, ensure_daemon
    from flex.errors import Unavailable
    from flex.home import flex_home

    target = resolve(server, token)
    if target.server is not None:
        return FlexClient(target.server, target.token, timeout=timeout), target
    home = flex_home()
    if start:
        ensure_daemon(home)
    elif daemon_info(home) is None:
        raise Unavailable("the flex daemon is not running (and no control plane is configured)",
                          hint="start it with `flex daemon start` (`flex up` starts it), "
                               "or use a control plane with `flex login --server URL`")
    return daemon_client(home, timeout=timeout), target
