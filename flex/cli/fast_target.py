"""The lean paths' (flex/cli/fast_ssh.py, flex/cli/fast_exec.py) control plane, without typer, httpx or pydantic:
the URL and token as flex/cli/target.py's endpoint() finds them. Where the full command would say more (a URL
without a scheme, a saved login without a server, no daemon), None: the full command runs instead."""

from __future__ import annotations

import json
import os

__all__ = ["config_dir", "target"]


def config_dir() -> str:
    """flex.client.config.config_path()'s directory (that module imports httpx and pydantic)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "flex")


def target(server: str | None) -> tuple[str, str | None] | None:
    """(URL, token) as flex/cli/target.py's endpoint() finds them; None where it would say more."""
    server, token = server or os.environ.get("FLEX_URL") or None, os.environ.get("FLEX_TOKEN") or None
    saved_path = os.path.join(config_dir(), "client.json")
    saved_exists = os.path.exists(saved_path)
    if (server is None or token is None) and saved_exists:
        try:
            with open(saved_path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict):
            return None
        server, token = server or saved.get("server"), token or saved.get("token")
    if server is not None or token is not None or saved_exists:
        if not isinstance(server, str) or not server.startswith(("http://", "https://")):
            return None
        return server.rstrip("/"), token if isinstance(token, str) else None
    from flex.daemon.paths import DaemonPaths
    from flex.home import flex_home

    paths = DaemonPaths(flex_home())
    try:
        return paths.url, paths.token_file.read_text().strip()
    except OSError:
        return None
