"""Serving an exec stream: the command runs in the environment's container as its ``remoteUser``, in the
workspace folder, with ``remoteEnv``; with or without a pty; the exit code is the stream's last message.

The runner starts the command with crun itself (flex/runner/access/spawn.py), on the container's own pty
when the client asked for one (a resize reaches the command as SIGWINCH). Its stdout and stderr are read at
most 32 KiB at a time and each read waits for the stream's credit, so a client that stops reading stops the
command's output, not our memory. Messages: flex/api/access.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flex.api import Environment
from flex.api.access import RESIZE, STATUS, STDERR, STDIN, STDOUT, ExecRequest
from flex.api.tunnel import Stream, StreamClosed
from flex.client import FlexClient
from flex.errors import FailedPrecondition, FlexError, InvalidArgument, NotFound
from flex.runner.access.spawn import Running, error_text, exec_in, stop
from flex.runner.build.step import cached_build
from flex.runner.container_plan import Hook, PlanError, _hook, needs_build, plan_container, read_devcontainer
from flex.runner.credential import Credential
from flex.runner.lifecycle import HookFailed, run_hook
from flex.runner.machine import Machine
from flex.runner.storage import EnvPaths

__all__ = ["ExecService", "Target"]

_CHUNK = 32 * 1024


@dataclass(frozen=True)
class Target:
    """Where and as whom a user's command runs in an environment."""

    container_id: str
    user: str | None
    workdir: str
    env: dict[str, str]
    post_attach: Hook | None = None  # postAttachCommand: run on the first attach to this container


def _remote_env(config: dict[str, Any]) -> dict[str, str]:
    raw = config.get("remoteEnv") or {}
    return {str(k): str(v) for k, v in raw.items() if v is not None} if isinstance(raw, dict) else {}


class ExecService:
    def __init__(self, home: Path, cred: Credential) -> None:
        self.home, self.cred = home, cred
        self._local = threading.local()

    @property
    def machine(self) -> Machine:
        """This thread's view of the runtime (as the agent's workers, one per thread: its database
        connection is not shared between threads)."""
        machine: Machine | None = getattr(self._local, "machine", None)
        if machine is None:
            machine = self._local.machine = Machine(self.home)
        return machine

    @contextlib.contextmanager
    def client(self) -> Iterator[FlexClient]:
        """This thread's client of the control plane, kept between sessions: a new one costs a session ~20 ms
        (its TLS context reads the CA bundle) and a connection."""
        client: FlexClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = FlexClient(self.cred.url, self.cred.credential, timeout=15)
        yield client

    def target(self, env_id: str) -> Target:
        """The environment's running container and its remoteUser; NotFound unless it is bound here."""
        with self.client() as client:
            env: Environment = client.runner_environment(self.cred.runner_id, env_id)
        containers = [c for c in self.machine.of_environment(env_id) if c.state == "running"]
        if not containers:
            raise FailedPrecondition(f"environment {env.metadata.name!r} is not running",
                                     hint=f"start it: flex start {env.metadata.name}")
        paths = EnvPaths(self.home, env_id)
        source = paths.workspace(env.metadata.name) if env.spec.source.git is not None \
            else Path(env.spec.source.path or "/nonexistent")
        try:
            config = read_devcontainer(source, env.spec.devcontainer, paths.state, dict(env.spec.env))
            built = cached_build(paths.state, env.metadata.generation) if needs_build(config) else None
            plan = plan_container(config, env.metadata.name,
                                  (built.image, built.metadata, built.merged) if built is not None else None)
            if built is not None:
                config = built.merged  # remoteUser and remoteEnv as features and the image's metadata say
        except PlanError as err:
            raise FailedPrecondition(f"environment {env.metadata.name!r}: {err.message}") from None
        return Target(containers[0].id, plan.remote_user, plan.workspace_folder, _remote_env(config),
                      _hook("postAttachCommand", config.get("postAttachCommand")))

    def attach(self, env_id: str, target: Target) -> None:
        """postAttachCommand, on the first attach (an exec or an SSH session) to this container, once: the
        marker is taken (O_EXCL) before it runs, so two sessions opening together do not both run it. Its
        output goes to the hooks log; a failure there does not keep the user out."""
        if target.post_attach is None:
            return
        paths = EnvPaths(self.home, env_id)
        markers = paths.state / "hooks"
        markers.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(markers / f"{target.container_id}.postAttachCommand.done",
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return
        container = next((c for c in self.machine.of_environment(env_id) if c.id == target.container_id), None)
        if container is None:
            return
        with contextlib.suppress(HookFailed):
            run_hook(target.post_attach, lambda argv, user, workdir: self.machine.exec(container, argv, user, workdir,
                                                                                       target.env),
                     target.user, target.workdir, paths.hooks_log)

    async def serve(self, stream: Stream) -> None:
        env_id = str(stream.header.get("env", ""))
        try:
            request = ExecRequest.model_validate_json(await stream.recv())
        except ValueError as err:
            raise InvalidArgument(f"unreadable exec request: {err}") from None
        try:
            target = await asyncio.to_thread(self.target, env_id)
        except NotFound:
            raise NotFound("environment not found on this runner") from None
        await asyncio.to_thread(self.attach, env_id, target)
        try:
            async with exec_in(lambda: self.machine, target.container_id, request.command, user=target.user,
                               workdir=target.workdir, env=target.env, stdin=request.stdin, tty=request.tty,
                               cols=request.cols, rows=request.rows) as running:
                code = await (_run_tty(running, stream) if running.pty is not None else _run_pipes(running, stream))
                code, text = running.status(code)
        except FlexError as err:  # nothing ran (a missing command or user): as `flex runtime exec` said it
            code, text = err.exit_code, error_text(err)
        if text:
            await stream.send(bytes([STDERR]) + text)
        await stream.send(bytes([STATUS]) + json.dumps({"exitCode": code}).encode())


async def _pump_in(stream: Stream, write: Any, close_stdin: Any, resize: Any) -> None:
    """Client messages to the process: stdin bytes (empty: end of input) and resizes."""
    while True:
        message = await stream.recv()
        if not message:
            continue
        channel, payload = message[0], message[1:]
        if channel == STDIN:
            if payload:
                await write(payload)
            else:
                await close_stdin()
        elif channel == RESIZE and resize is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                size = json.loads(payload)
                resize(int(size["cols"]), int(size["rows"]))


async def _until_exit(proc: asyncio.subprocess.Process, outputs: list[asyncio.Task[None]],
                      stdin_task: asyncio.Task[None]) -> int:
    """Wait for the process and its output; if the client goes first, end the process."""
    waiter: asyncio.Future[list[object]] = asyncio.ensure_future(asyncio.gather(proc.wait(), *outputs))
    try:
        pending: list[asyncio.Future[Any]] = [waiter, stdin_task]
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            waiter.result()
            return proc.returncode if proc.returncode is not None and proc.returncode >= 0 else 255
        # the client went (or sent what cannot be served) before the command ended
        raise (stdin_task.exception() if not stdin_task.cancelled() else None) or StreamClosed()
    except BaseException:
        stop(proc)
        waiter.cancel()
        raise
    finally:
        stdin_task.cancel()


async def _run_pipes(running: Running, stream: Stream) -> int:
    proc = running.proc

    async def copy(reader: asyncio.StreamReader | None, channel: int) -> None:
        assert reader is not None
        while chunk := await reader.read(_CHUNK):
            await stream.send(bytes([channel]) + chunk)

    async def write(data: bytes) -> None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()

    async def close_stdin() -> None:
        if proc.stdin is not None:
            proc.stdin.close()

    outputs = [asyncio.create_task(copy(proc.stdout, STDOUT)), asyncio.create_task(copy(proc.stderr, STDERR))]
    stdin_task = asyncio.create_task(_pump_in(stream, write, close_stdin, None))
    return await _until_exit(proc, outputs, stdin_task)


async def _run_tty(running: Running, stream: Stream) -> int:
    pty = running.pty
    assert pty is not None

    async def copy() -> None:
        while chunk := await pty.read():
            await stream.send(bytes([STDOUT]) + chunk)

    outputs = [asyncio.create_task(copy())]
    stdin_task = asyncio.create_task(_pump_in(stream, pty.write, pty.end_input, pty.resize))
    return await _until_exit(running.proc, outputs, stdin_task)
