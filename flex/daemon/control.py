"""Managing the daemon from the CLI: is it running, start it in the background, stop it, a client for it.

    info = ensure_daemon(home)            # running, or started (setsid, logs to daemon.log) and ready
    with daemon_client(home) as client:   # the admin token of the daemon's control plane, over its socket
        client.list_environments()

The daemon is ready once state.json names a live pid and the socket answers /readyz: by then its runner has
joined, so an environment created right after is scheduled at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from flex import __version__
from flex.client import FlexClient
from flex.daemon.paths import DaemonPaths
from flex.errors import FailedPrecondition, FlexError, Unavailable, error_for_kind
from flex.pids import pid_alive

__all__ = ["DaemonInfo", "daemon_client", "daemon_info", "ensure_daemon", "start_daemon", "stop_daemon"]


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    socket: str
    url: str | None  # the loopback port, if it serves one
    runner_id: str
    rootless: bool
    started_at: float
    log: str
    version: str | None  # the flex it runs (None: one from before versions were recorded)


def _answers(paths: DaemonPaths, timeout: float = 2.0) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths.socket)), base_url="http://flex",
                          timeout=timeout) as c:
            return c.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def daemon_info(home: Path, *, check: bool = True) -> DaemonInfo | None:
    """The running daemon of ``home``, or None. ``check``: it must also answer on its socket."""
    paths = DaemonPaths(home)
    try:
        s = json.loads(paths.state.read_text())
        info = DaemonInfo(pid=int(s["pid"]), socket=str(s["socket"]), url=s.get("url"), runner_id=str(s["runnerId"]),
                          rootless=bool(s.get("rootless")), started_at=float(s["startedAt"]), log=str(paths.log),
                          version=s.get("version") if isinstance(s.get("version"), str) else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(info.pid):
        return None
    if check and not _answers(paths):
        raise Unavailable(f"the flex daemon (pid {info.pid}) does not answer on {paths.socket}",
                          hint="see `flex daemon logs`; restart it with `flex daemon stop && flex daemon start`")
    return info


def daemon_client(home: Path, *, timeout: float = 30.0) -> FlexClient:
    paths = DaemonPaths(home)
    try:
        token = paths.token_file.read_text().strip()
    except OSError as err:
        raise FailedPrecondition(f"cannot read the daemon's token {paths.token_file}: {err.strerror}",
                                 hint="start the daemon with `flex daemon start`") from None
    return FlexClient(paths.url, token, timeout=timeout)


def _error_from_log(text: str) -> FlexError | None:
    """The daemon reports a start-up error as flex does (``error: ...`` / ``hint: ...`` lines): re-raise it."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error: "):
            hint = lines[i + 1][len("hint: "):] if i + 1 < len(lines) and lines[i + 1].startswith("hint: ") else None
            kind = lines[i - 1][len("kind: "):] if i > 0 and lines[i - 1].startswith("kind: ") else "FailedPrecondition"
            return error_for_kind(kind, lines[i][len("error: "):], hint=hint)
    return None


def start_daemon(home: Path, *, listen: str | None = None, timeout: float = 90.0) -> tuple[DaemonInfo, bool]:
    """Start the daemon in the background unless it runs; (info, started)."""
    info = daemon_info(home)
    if info is not None:
        return info, False
    paths = DaemonPaths(home).ensure()
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    offset = os.lseek(fd, 0, os.SEEK_END)
    argv = [sys.executable, "-m", "flex", "daemon", "run", *(["--listen", listen] if listen else [])]
    env = {**os.environ, "FLEX_HOME": str(home), "FLEX_DAEMON_REPORT_KIND": "1"}
    try:
        # its own session: closing the terminal (SIGHUP to the terminal's session) does not reach it
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env, cwd="/",
                                start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(paths.log, errors="replace") as f:
                f.seek(offset)
                text = f.read()
            err = _error_from_log(text)
            if err is not None:
                raise err
            tail = "\n".join(text.strip().splitlines()[-5:])
            raise Unavailable(f"the flex daemon exited at start ({proc.returncode}): {tail}",
                              hint=f"see {paths.log}")
        info = daemon_info(home, check=False)
        if info is not None and info.pid == proc.pid and _answers(paths):
            return info, True
        time.sleep(0.05)
    raise Unavailable(f"the flex daemon did not become ready in {timeout:.0f} s", hint=f"see {paths.log}")


def ensure_daemon(home: Path) -> DaemonInfo:
    """The daemon, started if need be, and running this flex: one left from before an upgrade is restarted
    (as gradle's client will not use another version's daemon). Environments keep running through it:
    their containers are not the daemon's children."""
    info = daemon_info(home)
    if info is not None and info.version != __version__:
        print(f"flex: restarting the daemon (pid {info.pid}, flex {info.version or 'older'}) to run flex "
              f"{__version__}; environments keep running", file=sys.stderr, flush=True)
        stop_daemon(home)
    return start_daemon(home)[0]


def stop_daemon(home: Path, *, timeout: float = 60.0) -> DaemonInfo | None:
    """SIGTERM, then wait (the runner finishes the reconciles in flight); SIGKILL after ``timeout``. The daemon
    that was running, or None."""
    info = daemon_info(home, check=False)
    if info is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return info
