"""The files `flex ssh` and `flex config-ssh` keep: flex's own known_hosts (the runners' host keys, as the control
plane reports them) and a managed block in ~/.ssh/config for `ssh ENV.flex`.

The block is appended the first time, replaced in place after that, and removed with the newline put before it,
so the rest of the file stays byte for byte what it was. Writes are atomic and keep the file's mode (0600 when new).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from flex.atomic import write_atomic

__all__ = ["BEGIN", "END", "SUFFIX", "known_hosts_path", "managed_block", "remember_host_key", "remove_block",
           "ssh_config_path", "with_block", "write_config"]

SUFFIX = ".flex"
BEGIN = "# ------------START-FLEX------------ managed by `flex config-ssh`; `flex config-ssh --remove` removes it"
END = "# ------------END-FLEX--------------"


def known_hosts_path() -> Path:
    from flex.client.config import config_path

    return config_path().parent / "ssh" / "known_hosts"


def ssh_config_path() -> Path:
    return Path.home() / ".ssh" / "config"


def remember_host_key(name: str, key_line: str, path: Path | None = None) -> None:
    """``ENV.flex``'s entry in flex's known_hosts is ``key_line`` (``ssh-ed25519 AAAA...``)."""
    path = path or known_hosts_path()
    host = name + SUFFIX
    fields = key_line.split()
    if len(fields) < 2 or "\n" in key_line:
        from flex.errors import FlexError

        raise FlexError(f"the control plane sent an unreadable SSH host key for {name!r}")
    entry = f"{host} {fields[0]} {fields[1]}\n"
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = ""
    lines = [line for line in old.splitlines(keepends=True) if line.split(" ", 1)[0] != host]
    new = "".join(lines) + entry
    if new != old:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, new, mode=0o600, durable=False)


def managed_block(server: str | None) -> str:
    """The ``Host *.flex`` block: `flex ssh --stdio %n` as the ProxyCommand, pinned by flex's known_hosts."""
    flex = f"{shlex.quote(sys.executable)} -m flex"
    proxy = f"{flex} ssh --stdio{f' --server {shlex.quote(server)}' if server else ''} %n"
    return "\n".join([
        BEGIN,
        f"Host *{SUFFIX}",
        f"    ProxyCommand {proxy}",
        f'    UserKnownHostsFile "{known_hosts_path()}"',
        "    StrictHostKeyChecking yes",
        "    ServerAliveInterval 30",
        END,
    ]) + "\n"


def _span(text: str) -> tuple[int, int] | None:
    start = text.find(BEGIN)
    if start < 0 or (start > 0 and text[start - 1] != "\n"):
        return None
    end = text.find(END, start)
    if end < 0:
        return None
    end += len(END)
    if text[end:end + 1] == "\n":
        end += 1
    return start, end


def with_block(text: str, block: str) -> str:
    span = _span(text)
    if span is not None:
        return text[:span[0]] + block + text[span[1]:]
    return text + ("\n" if text else "") + block  # the newline before it goes with it on --remove


def remove_block(text: str) -> str:
    span = _span(text)
    if span is None:
        return text
    start = span[0] - 1 if span[0] > 0 else 0
    return text[:start] + text[span[1]:]


def write_config(path: Path, text: str) -> None:
    """Atomically, keeping the file's mode; an emptied file that we made is removed."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600
    if not text:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, text, mode=mode)
    os.chmod(path, mode)
