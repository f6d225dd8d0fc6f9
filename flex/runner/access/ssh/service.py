"""Serving SSH streams: each stream carries one SSH connection's raw bytes to an asyncssh server of ours, which
listens on no port: the stream is handed to it over a socket pair.

No SSH authentication: the stream exists only because the control plane checked the user's token when it was
opened, and only for that user's own environment (another user's is 404 there); the runner serves it only for an
environment bound to it. The client pins this runner's host key (flex/runner/access/ssh/hostkey.py), so it knows it
talks to the runner. What asyncssh offers beyond sessions and forwarding (X11; listeners or connections on the
runner's own machine) stays off: forwarding ends inside the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

from flex.api.tunnel import Stream
from flex.errors import FailedPrecondition, NotFound
from flex.runner.access.exec import ExecService, Target
from flex.runner.access.ports import connect_in_container, splice
from flex.runner.access.ssh.agent import AgentSocket
from flex.runner.access.ssh.forward import forward_to
from flex.runner.access.ssh.hostkey import host_key
from flex.runner.access.ssh.remote import RemoteListener, remote_listen
from flex.runner.access.ssh.session import run_session
from flex.runtime.containers.store import Container

__all__ = ["SSHService"]

log = logging.getLogger("flex.runner.access")


class _Process(asyncssh.SSHServerProcess[bytes]):
    """A session whose sftp subsystem is a command like any other: asyncssh serves sftp itself or refuses it,
    and ours is the container's own sftp-server (flex/runner/access/ssh/session.py says why)."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # one we do not have ends with a line on stderr and exit 127

    def session_started(self) -> None:
        chan: Any = self._chan
        if chan.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = asyncssh.SSHReader[bytes](self, chan)
        stdout = asyncssh.SSHWriter[bytes](self, chan)
        stderr = asyncssh.SSHWriter[bytes](self, chan, asyncssh.EXTENDED_DATA_STDERR)
        handler = self._start_process(stdin, stdout, stderr)
        if inspect.isawaitable(handler):
            conn: Any = self._conn
            conn.create_task(handler, stdin.logger)


class _Server(asyncssh.SSHServer):
    def __init__(self, connect: Callable[[int], socket.socket],
                 remote: Callable[[asyncssh.SSHServerConnection, str, int], Awaitable[RemoteListener | bool]],
                 process_factory: Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]) -> None:
        self.connect, self.remote, self.process_factory = connect, remote, process_factory
        self.conn: asyncssh.SSHServerConnection | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Process(self.process_factory, None, asyncssh.sftp.MIN_SFTP_VERSION, False)

    def begin_auth(self, username: str) -> bool:
        return False  # the control plane authorised this stream before it existed (see the module's doc)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        return forward_to(self.connect, dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Awaitable[RemoteListener | bool] | bool:
        if self.conn is None:
            return False
        return self.remote(self.conn, listen_host, listen_port)  # in the environment, never on the runner

    def connection_lost(self, exc: Exception | None) -> None:
        for task in list(self.tasks):
            task.cancel()


class SSHService:
    def __init__(self, execs: ExecService, home: Path) -> None:
        self.execs, self.home = execs, home
        self._key: asyncssh.SSHKey | None = None

    @property
    def key(self) -> asyncssh.SSHKey:
        if self._key is None:
            self._key = host_key(self.home)
        return self._key

    def _locate(self, env_id: str) -> tuple[Target, Container]:
        try:
            target = self.execs.target(env_id)
        except NotFound:
            raise NotFound("environment not found on this runner") from None
        running = [c for c in self.execs.machine.of_environment(env_id) if c.id == target.container_id and c.pid]
        if not running:
            raise FailedPrecondition("the environment's container is not running", hint="start it: flex start")
        return target, running[0]

    async def serve_hostkey(self, stream: Stream) -> None:
        """The public host key, one OpenSSH line, for an environment bound here."""
        env_id = str(stream.header.get("env", ""))
        with self.execs.client() as client:
            await asyncio.to_thread(client.runner_environment, self.execs.cred.runner_id, env_id)
        key = await asyncio.to_thread(lambda: self.key)
        await stream.send(key.export_public_key())

    async def serve(self, stream: Stream) -> None:
        env_id = str(stream.header.get("env", ""))
        target, container = await asyncio.to_thread(self._locate, env_id)
        key = await asyncio.to_thread(lambda: self.key)
        assert container.pid is not None
        pid, rootless = container.pid, self.execs.machine.rootless

        async def session(process: asyncssh.SSHServerProcess[bytes]) -> None:
            task = asyncio.current_task()
            assert task is not None
            server.tasks.add(task)
            agent: AgentSocket | None = None
            try:
                extra: dict[str, str] = {}
                for _ in range(20):  # the agent request is finished by a task of asyncssh's own
                    if process.channel.get_agent_path() is not None:
                        break
                    await asyncio.sleep(0)
                if process.channel.get_agent_path() is not None and server.conn is not None:
                    agent = AgentSocket(server.conn, self.execs, container, target)
                    try:
                        extra["SSH_AUTH_SOCK"] = await agent.start()
                    except OSError as err:
                        process.stderr.write(f"flex: agent forwarding failed: {err}\r\n".encode())
                await asyncio.to_thread(self.execs.attach, env_id, target)
                code = await run_session(process, target, extra, lambda: self.execs.machine)
                process.exit(code)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("ssh session in %s: %s", env_id, err)
                with contextlib.suppress(Exception):
                    process.stderr.write(f"flex: {err}\r\n".encode())
                    process.exit(255)
            finally:
                server.tasks.discard(task)
                if agent is not None:
                    await agent.close()

        server = _Server(lambda port: connect_in_container(pid, port, rootless),
                         lambda conn, host, port: remote_listen(conn, pid, rootless, host, port), session)
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=theirs)
        await stream.send(key.export_public_key())  # ready, and the key to pin: the WebSocket is accepted on it

        async def start() -> asyncssh.SSHServerConnection:
            return await asyncssh.run_server(
                ours, server_factory=lambda: server, server_host_keys=[key], encoding=None,
                line_editor=False, agent_forwarding=True, allow_scp=False, x11_forwarding=False,
                login_timeout=60, keepalive_interval=30)

        conn_task = asyncio.create_task(start())

        try:
            await splice(stream, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(BaseException):
                conn = await asyncio.wait_for(conn_task, 1) if not conn_task.done() else conn_task.result()
                conn.close()
            conn_task.cancel()
            server.connection_lost(None)
