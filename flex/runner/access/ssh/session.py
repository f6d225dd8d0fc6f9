"""One SSH session channel: a shell, a command or the sftp subsystem, run in the environment's container
as the remoteUser, in the workspace folder, with remoteEnv, started as `flex exec` starts its command
(flex/runner/access/spawn.py).

A pty request gets the container's own pty (resizes reach the command as SIGWINCH, as for exec); without
one, stdin, stdout and stderr are pipes. Output is copied by hand until EOF and only then is the exit status
sent: each write waits for the channel's window, so a stalled client stalls the command, not our memory.

SFTP is the image's own `sftp-server`, run inside the container as the remoteUser: files it writes belong to
that user as the container sees it, through whatever id map the container has (root or rootless), and paths
(symlinks, `..`) resolve in the container's root by the kernel. A server of ours on the runner's side would
run as the runner's user on the host and would have to map owners and confine paths itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncssh

from flex.errors import FlexError
from flex.runner.access.exec import Target
from flex.runner.access.spawn import Running, error_text, exec_in, stop
from flex.runner.machine import Machine

__all__ = ["LOGIN_SHELL", "SFTP_SERVER", "run_session"]

_CHUNK = 32 * 1024

# the user's login shell from the container's passwd (OpenSSH runs it with -c for a command)
LOGIN_SHELL = 'shell=$(getent passwd "$(id -un)" | cut -d: -f7); [ -x "${shell:-}" ] || shell=/bin/sh; '
SFTP_SERVER = ("for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server "
               "/usr/libexec/sftp-server; do [ -x \"$p\" ] && exec \"$p\"; done; "
               "echo 'flex: this image has no sftp-server (Debian: apt-get install openssh-sftp-server)' >&2; "
               "exit 127")


def _command(process: asyncssh.SSHServerProcess[bytes]) -> list[str]:
    if process.subsystem == "sftp":
        return ["/bin/sh", "-c", SFTP_SERVER]
    if process.subsystem:
        return ["/bin/sh", "-c", f"echo 'flex: no subsystem {process.subsystem!r} (only sftp)' >&2; exit 127"]
    if process.command is None:
        return ["/bin/sh", "-c", LOGIN_SHELL + 'exec "$shell" -l']
    return ["/bin/sh", "-c", LOGIN_SHELL + 'exec "$shell" -c "$1"', "sh", process.command]


async def run_session(process: asyncssh.SSHServerProcess[bytes], target: Target, extra_env: dict[str, str],
                      machine: Callable[[], Machine]) -> int:
    """Run the session's command to its end; returns its exit status (the caller sends it)."""
    tty = process.term_type is not None and not process.subsystem
    cols, rows, _, _ = process.term_size
    try:
        async with exec_in(machine, target.container_id, _command(process), user=target.user,
                           workdir=target.workdir, env={**target.env, **extra_env}, stdin=True, tty=tty,
                           cols=cols or None, rows=rows or None, term=process.term_type or "xterm-256color"
                           ) as running:
            code = await (_run_tty(running, process) if running.pty is not None else _run_pipes(running, process))
            code, text = running.status(code)
    except FlexError as err:  # nothing ran (a missing user, say): as `flex runtime exec` said it
        code, text = err.exit_code, error_text(err)
    if text:
        process.stderr.write(text.replace(b"\n", b"\r\n") if tty else text)
    return code


async def _finish(proc: asyncio.subprocess.Process, outputs: list[asyncio.Task[None]],
                  feeding: asyncio.Task[None]) -> int:
    try:
        await asyncio.gather(proc.wait(), *outputs)
        return proc.returncode if proc.returncode is not None and proc.returncode >= 0 else 255
    except BaseException:  # the client went: end the command
        stop(proc)
        raise
    finally:
        feeding.cancel()


async def _run_pipes(running: Running, process: asyncssh.SSHServerProcess[bytes]) -> int:
    proc = running.proc
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def copy(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, asyncssh.BreakReceived, asyncssh.SignalReceived):
            while True:
                try:
                    data = await process.stdin.read(_CHUNK)
                except asyncssh.TerminalSizeChanged:
                    continue
                if not data:
                    break
                proc.stdin.write(data)
                await proc.stdin.drain()
        proc.stdin.close()

    outputs = [asyncio.create_task(copy(proc.stdout, process.stdout)),
               asyncio.create_task(copy(proc.stderr, process.stderr))]
    return await _finish(proc, outputs, asyncio.create_task(feed()))


async def _run_tty(running: Running, process: asyncssh.SSHServerProcess[bytes]) -> int:
    pty = running.pty
    assert pty is not None

    async def copy() -> None:
        while chunk := await pty.read():
            process.stdout.write(chunk)
            await process.stdout.drain()

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                try:
                    data = await process.stdin.read(_CHUNK)
                except asyncssh.TerminalSizeChanged as size:
                    pty.resize(size.width, size.height)
                    continue
                except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                    continue
                if not data:
                    await pty.end_input()
                    return
                await pty.write(data)

    return await _finish(running.proc, [asyncio.create_task(copy())], asyncio.create_task(feed()))


