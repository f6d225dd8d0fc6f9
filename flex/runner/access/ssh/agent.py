"""Agent forwarding (`ssh -A`): a unix socket inside the container, in a fresh 0700 directory of the
remoteUser's under /tmp, whose path the session gets as SSH_AUTH_SOCK. Each connection to it is carried to the
client's agent over the SSH connection.

The runner binds the socket through /proc/PID/root, the container's own root as the kernel resolves it, so
nothing is mounted and no listening socket appears on the runner's file system; the directory is then given
to the remoteUser (as root from the host for a root runner, whose files would otherwise belong to an unmapped
uid; with `chown` run inside the container for a rootless one, whose own uid is the container's root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from pathlib import Path

import asyncssh

from flex.runner.access.exec import ExecService, Target
from flex.runtime.containers.store import Container

__all__ = ["AgentSocket"]


def _host_root_ids(pid: int) -> tuple[int, int]:
    """The host uid and gid that are root inside the container of ``pid``."""
    ids = []
    for name in ("uid_map", "gid_map"):
        inside, outside = 0, 0
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            a, b, _ = (int(x) for x in line.split())
            if a == 0:
                inside, outside = a, b
        ids.append(outside - inside)
    return ids[0], ids[1]


async def _pipe(reader: asyncio.StreamReader | asyncssh.SSHReader[bytes],
                writer: asyncio.StreamWriter | asyncssh.SSHWriter[bytes]) -> None:
    with contextlib.suppress(OSError, asyncssh.Error):
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, asyncssh.Error):
        writer.write_eof()


class AgentSocket:
    def __init__(self, conn: asyncssh.SSHServerConnection, execs: ExecService, container: Container,
                 target: Target) -> None:
        assert container.pid is not None
        self.conn, self.execs, self.container, self.target = conn, execs, container, target
        self.pid = container.pid
        self.dir = f"/tmp/flex-ssh-{secrets.token_hex(8)}"
        self.path = f"{self.dir}/agent.sock"
        self._server: asyncio.AbstractServer | None = None

    @property
    def _host_dir(self) -> Path:
        return Path(f"/proc/{self.pid}/root{self.dir}")

    async def start(self) -> str:
        """Listen; returns the socket's path as the container sees it."""
        os.mkdir(self._host_dir, 0o700)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self._host_dir / "agent.sock"))
        user = self.target.user
        if os.geteuid() == 0:
            uid, gid = _host_root_ids(self.pid)
            for p in (self._host_dir, self._host_dir / "agent.sock"):
                os.chown(p, uid, gid, follow_symlinks=False)
        if user and user not in ("root", "0"):
            code, out = await asyncio.to_thread(
                lambda: self.execs.machine.exec(self.container, ["chown", "-R", user, self.dir], "root", "/"))
            if code != 0:
                raise OSError(f"chown of the agent socket failed: {out.strip()}")
        return self.path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.conn.open_agent_connection()
        except (OSError, asyncssh.Error):
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self._host_dir, True)
