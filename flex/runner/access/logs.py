"""Serving a logs stream: an environment's container output, lifecycle hook output or build output, whole or
followed (issue 15).

    container   the container's log file in the runtime (what its PID 1 wrote), the bundle's ``log``
    hooks       FLEX_HOME/runner/logs/<env id>/hooks.log (earlier runners: state/<env id>/hooks/hooks.log)
    build       FLEX_HOME/runner/logs/<env id>/build.log

The first DATA message is empty: the log was found and the stream is good (the control plane answers its
HTTP request then). Then the file's bytes, 32 KiB at a time, each send waiting for the stream's credit; with
``follow``, new bytes as they are appended (polled every 0.2 s; a file that shrinks was rotated or
truncated, and is read again from its start), until the client goes away.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from flex.api.tunnel import Stream
from flex.errors import InvalidArgument, NotFound
from flex.runner.access.exec import ExecService

__all__ = ["SOURCES", "LogService", "log_path"]

SOURCES = ("container", "hooks", "build")
_CHUNK = 32 * 1024
_POLL = 0.2


def log_path(home: Path, env_id: str, source: str) -> Path:
    """Where the runner keeps an environment's hook or build log."""
    return home / "runner" / "logs" / env_id / f"{source}.log"


class LogService:
    def __init__(self, execs: ExecService) -> None:
        self.execs = execs

    def _path(self, env_id: str, source: str) -> Path | None:
        """The log file (None: it has not been written yet); NotFound unless the environment is bound here."""
        with self.execs.client() as client:
            client.runner_environment(self.execs.cred.runner_id, env_id)
        home = self.execs.home
        if source == "container":
            containers = self.execs.machine.of_environment(env_id)
            return self.execs.machine.containers.bundle(containers[0].id) / "log" if containers else None
        path = log_path(home, env_id, source)
        if source == "hooks" and not path.exists():
            old = home / "runner" / "state" / env_id / "hooks" / "hooks.log"
            return old if old.exists() else path
        return path

    async def serve(self, stream: Stream) -> None:
        env_id = str(stream.header.get("env", ""))
        source = str(stream.header.get("source", "container"))
        follow = bool(stream.header.get("follow", False))
        if source not in SOURCES:
            raise InvalidArgument(f"source {source!r}: expected one of {', '.join(SOURCES)}")
        try:
            path = await asyncio.to_thread(self._path, env_id, source)
        except NotFound:
            raise NotFound("environment not found on this runner") from None
        await stream.send(b"")
        offset = 0
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path is not None else None
            except FileNotFoundError:
                fd = None
            if fd is not None:
                try:
                    if os.fstat(fd).st_size < offset:
                        offset = 0  # truncated or replaced: from its start
                    os.lseek(fd, offset, os.SEEK_SET)
                    while chunk := os.read(fd, _CHUNK):
                        offset += len(chunk)
                        await stream.send(chunk)
                finally:
                    os.close(fd)
            if not follow:
                return
            if stream.closed:
                return
            await asyncio.sleep(_POLL)
            if path is None and source == "container":  # the container may have been created meanwhile
                path = await asyncio.to_thread(self._path, env_id, source)
