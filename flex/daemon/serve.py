"""`flex daemon run`: the daemon in the foreground. One process, two halves:

    control plane   flex.controlplane's create_app() on SQLite under FLEX_HOME/daemon/server/, served by uvicorn
                    (in a thread) on the unix socket, and on a loopback port when asked (the web UI)
    runner          flex.runner's Agent, in the main thread (it owns SIGTERM/SIGINT), joined to the control
                    plane above as a desktop runner: rootless as an ordinary user, a root runner as root

The first start creates the admin (its token in server/admin-token, 0600) and joins the runner; later starts
reuse both. Containers are not children of this process (a monitor per container is), so environments keep
running while the daemon restarts. The lock file makes a second daemon on the same FLEX_HOME fail at once,
and a kill -9 leaves nothing that stops the next start: the lock goes with the process, the socket is
replaced, state.json names a dead pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO

from flex import __version__
from flex.atomic import write_atomic
from flex.client import FlexClient
from flex.daemon.paths import DaemonPaths
from flex.errors import AlreadyExists, FailedPrecondition, NotFound, Unauthenticated, Unavailable, UsageError
from flex.runner.credential import Credential

__all__ = ["run_daemon", "split_listen"]

log = logging.getLogger("flex.daemon")


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {listen!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8765")
    host = host.strip("[]") or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UsageError(f"--listen {listen!r}: the daemon serves on loopback only",
                         hint="use 127.0.0.1:PORT; for a shared control plane run `flex server`")
    return host, int(port)


def _lock(paths: DaemonPaths) -> IO[str]:
    f = open(paths.lock, "a+")  # noqa: SIM115  (held for the life of the process)
    os.chmod(paths.lock, 0o600)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        pid = "?"
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = str(json.loads(paths.state.read_text())["pid"])
        raise AlreadyExists(f"the flex daemon is already running (pid {pid})",
                            hint="see `flex daemon status`; stop it with `flex daemon stop`") from None
    return f


def _check_rootless() -> None:
    """An ordinary user needs a subordinate id range: say what to run now, not at the first environment."""
    if os.geteuid() == 0:
        return
    import pwd

    from flex.runtime.userns.idmap import rootless_map

    try:
        rootless_map()
    except FailedPrecondition as err:
        name = pwd.getpwuid(os.getuid()).pw_name
        raise FailedPrecondition(f"this user cannot run rootless environments yet: {err.message}",
                                 hint=f"as root, run: installer/install.sh --user {name}") from None


def _unix_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # a daemon killed with -9 leaves its socket: we hold the lock, so it is stale
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # 0600 from the start: never a moment when others may connect
    try:
        s.bind(str(path))
    finally:
        os.umask(old)
    s.listen(128)
    return s


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as err:
        s.close()
        raise Unavailable(f"cannot listen on {host}:{port}: {err.strerror}",
                          hint="another program uses that port: pick another with --listen 127.0.0.1:PORT") from None
    s.listen(128)
    return s


def _ensure_runner(paths: DaemonPaths, admin: FlexClient) -> Credential:
    """The runner's credential: the saved one while the control plane still knows it, else a fresh join."""
    from flex.runner.capacity import machine_capacity

    try:
        data = json.loads(paths.credential.read_text())
        cred = Credential(**{k: str(data[k]) for k in ("url", "runner_id", "name", "kind", "credential")})
        cred = Credential(paths.url, cred.runner_id, cred.name, cred.kind, cred.credential)  # FLEX_HOME moved?
        with FlexClient(cred.url, cred.credential) as c:
            c.get_runner(cred.runner_id)
        return cred
    except (OSError, ValueError, KeyError, TypeError, NotFound, Unauthenticated):
        pass
    me = admin.whoami().name
    join = admin.create_join_token({"owner": me})
    answer = admin.join(join.token, "local", "desktop", machine_capacity(paths.home), rootless=os.geteuid() != 0)
    cred = Credential(url=paths.url, runner_id=answer.id, name="local", kind="desktop", credential=answer.credential)
    write_atomic(paths.credential, json.dumps(cred.__dict__, indent=2) + "\n", mode=0o600)
    log.info("joined the embedded runner as %s", answer.id)
    return cred


def run_daemon(home: Path, listen: str | None = None) -> int:
    from flex.controlplane.app import create_app
    from flex.controlplane.config import Settings
    from flex.controlplane.serving import Server
    from flex.runner.agent import Agent, AgentOptions

    tcp = split_listen(listen) if listen else None
    paths = DaemonPaths(home).ensure()
    lock = _lock(paths)
    _check_rootless()
    socks = [_unix_socket(paths.socket)]
    if tcp is not None:
        socks.append(_tcp_socket(*tcp))
    app = create_app(Settings(server_dir=paths.server_dir, listen=listen or "127.0.0.1:0", heartbeat_timeout=30.0))
    server = Server(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3, timeout_keep_alive=65,
                    proxy_headers=False, lifespan="on", ws_per_message_deflate=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": socks}, name="api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise Unavailable("the embedded control plane did not start", hint=f"see {paths.log}")
            time.sleep(0.02)
        token = paths.token_file.read_text().strip()
        with FlexClient(paths.url, token) as admin:
            cred = _ensure_runner(paths, admin)
        state = {"pid": os.getpid(), "socket": str(paths.socket),
                 "url": f"http://{tcp[0]}:{tcp[1]}" if tcp else None, "runnerId": cred.runner_id,
                 "rootless": os.geteuid() != 0, "startedAt": time.time(), "home": str(home),
                 "version": __version__}
        write_atomic(paths.state, json.dumps(state, indent=2) + "\n", mode=0o600, durable=False)
        print(f"flex daemon (pid {os.getpid()}) on {paths.socket}"
              + (f" and {state['url']}" if tcp else "") + f"; runner {cred.runner_id}", file=sys.stderr, flush=True)
        code = Agent(home, cred, AgentOptions(resync=30.0, heartbeat=5.0)).run()
    finally:
        server.should_exit = True
        thread.join(15)
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(paths.state.read_text())["pid"] == os.getpid():
                paths.state.unlink()
        paths.socket.unlink(missing_ok=True)  # while we still hold the lock: never another daemon's socket
        lock.close()
    return code
