"""The runner's SSH host key: one per runner, generated on first use, kept 0600 under its FLEX_HOME.

Clients pin it: `flex ssh` fetches the public half through the control plane (the stream that fetches it is
authorised like every other) and writes it to flex's own known_hosts, so there is no trust-on-first-use prompt.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import asyncssh

from flex.atomic import write_atomic

__all__ = ["host_key", "host_key_path"]

_lock = threading.Lock()


def host_key_path(home: Path) -> Path:
    return home / "runner" / "ssh_host_ed25519_key"


def host_key(home: Path) -> asyncssh.SSHKey:
    """The runner's host key, made (atomically, 0600) the first time it is asked for."""
    path = host_key_path(home)
    with _lock:
        try:
            return asyncssh.import_private_key(path.read_bytes())
        except FileNotFoundError:
            pass
        key = asyncssh.generate_private_key("ssh-ed25519", comment="flex runner host key")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, key.export_private_key(), mode=0o600)
        os.chmod(path, 0o600)
        return key
