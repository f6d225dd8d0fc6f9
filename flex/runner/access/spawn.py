"""A session's command (exec or SSH) started in the environment's container by the runner itself: the runtime
writes the exec's process (remoteUser, workspace folder, remoteEnv) and crun runs it, as `flex runtime exec`
would, without a Python process per session in between (its start cost ~0.1 s and ~25 MiB a session).

With a terminal, crun hands the container's own pty master back over a console socket: the command sees a
/dev/pts of its container, and resizing the master makes the kernel send it SIGWINCH. Without one, its
stdin, stdout and stderr are pipes of ours. Errors the runtime finds before or after the run (a missing
command, a user that does not exist, crun's own failure) become what `flex runtime exec` printed: one error
line and a hint on stderr, and its exit code (127 for a missing command, as docker exec)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from flex.errors import FlexError
from flex.runner.access.pty import Pty
from flex.runner.machine import Machine
from flex.runtime.tasks.tasks import PreparedExec, exec_user, prepare_exec

__all__ = ["Running", "error_text", "exec_in", "stop"]


def error_text(err: FlexError) -> bytes:
    """What the CLI prints for ``err`` (flex/cli/main.py's report())."""
    return f"error: {err.message}\n".encode() + (f"hint: {err.hint}\n".encode() if err.hint else b"")


@dataclass
class Running:
    """``proc`` is crun's; ``pty`` the container's terminal (with one), else ``proc``'s pipes carry the stdio."""

    proc: asyncio.subprocess.Process
    pty: Pty | None
    prepared: PreparedExec

    def status(self, code: int) -> tuple[int, bytes]:
        """The session's exit code and what to add on its stderr, from crun's exit ``code``."""
        try:
            return self.prepared.check(code), b""
        except FlexError as err:
            return err.exit_code, error_text(err)


def _prepare(machine: Machine, container_id: str, command: list[str], user: str | None, workdir: str,
             env: dict[str, str], tty: bool, size: dict[str, int] | None, term: str) -> PreparedExec:
    store = machine.containers
    c = store.get(container_id)
    ids = exec_user(store, c, user) if user else None
    return prepare_exec(store, c, command, tty=tty, env=[f"{k}={v}" for k, v in env.items()], workdir=workdir,
                        user=ids, size=size, term=term)


@contextlib.asynccontextmanager
async def exec_in(machine: Callable[[], Machine], container_id: str, command: list[str], *, user: str | None,
                  workdir: str, env: dict[str, str], stdin: bool, tty: bool, cols: int | None = None,
                  rows: int | None = None, term: str = "xterm-256color") -> AsyncIterator[Running]:
    """Run ``command`` in the container; FlexError when it cannot start (nothing ran). ``machine()``: the
    calling thread's view of the runtime (its database connection is not shared between threads)."""
    size = {"height": rows or 24, "width": cols or 80} if tty else None
    prepared = await asyncio.to_thread(lambda: _prepare(machine(), container_id, command, user, workdir, env, tty,
                                                        size, term))
    try:
        if prepared.console is None:
            proc = await asyncio.create_subprocess_exec(
                *prepared.argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd="/", start_new_session=True)
            yield Running(proc, None, prepared)
            return
        proc = await asyncio.create_subprocess_exec(*prepared.argv, stdin=asyncio.subprocess.DEVNULL, cwd="/",
                                                    start_new_session=True)
        console = prepared.console
        try:
            master = await asyncio.to_thread(console.receive)
        except BaseException:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)  # crun that failed before sending the terminal is gone
            prepared.check(255)  # crun's own reason, if it logged one
            raise
        os.set_blocking(master, False)
        pty = Pty(master, proc)
        try:
            yield Running(proc, pty, prepared)
        finally:
            pty.close()
    finally:
        prepared.close()


def stop(proc: asyncio.subprocess.Process) -> None:
    """End a session whose client went: SIGHUP to crun's process group (the command in it too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGHUP)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
