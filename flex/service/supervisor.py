"""The supervising process of one service: ``python -m flex.service.supervisor NAME``.

Runs the unit's command with its output appended to FLEX_LOG/NAME.log, and starts it again when it exits on its
own, after 1, 2, 4 ... 30 s (back to 1 s once it ran for a minute) — what systemd's Restart=always with a
backoff does. SIGTERM or SIGINT stops it: the main process gets SIGTERM, then SIGKILL after the unit's
stop_timeout. Only the main process is signalled (systemd's KillMode=process): a runner's environments run in
sessions of their own and outlive a restart of the runner.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from flex.atomic import write_atomic
from flex.service.paths import ServicePaths
from flex.service.unit import Unit, load_unit

__all__ = ["backoff", "main", "supervise"]

ROTATE_BYTES = 64 * 2**20
STABLE_AFTER = 60.0  # a run this long resets the backoff


def backoff(failures: int) -> float:
    """Seconds to wait before restart number ``failures`` (1-based) of a crashing command."""
    return float(min(30, 2 ** max(0, failures - 1)))


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _say(log: Path, line: str) -> None:
    with open(log, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} flex-service: {line}\n")


def _open_log(log: Path) -> int:
    """The log for a new run; the old one kept as NAME.log.1 once it grew past ROTATE_BYTES."""
    try:
        if log.stat().st_size > ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
    return os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _as_user(unit: Unit) -> tuple[dict[str, str], int | None, int | None, list[int] | None]:
    """The environment and Popen arguments of the unit's command: root's own, or the unit's user's.

    A command run as a user gets a clean login-like environment (root's XDG_RUNTIME_DIR=/run/user/0 and the
    like must not leak into it; rootless podman broke on exactly that) and the user's groups.
    """
    if unit.user is None:
        return {**os.environ, **unit.environment}, None, None, None
    pw = pwd.getpwnam(unit.user)
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell or "/bin/sh",
           "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
    return {**env, **unit.environment}, pw.pw_uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)


def supervise(paths: ServicePaths, unit: Unit) -> int:
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.log.mkdir(parents=True, exist_ok=True)
    log = paths.log_file(unit.name)
    stopping = threading.Event()
    state: dict[str, object] = {"name": unit.name, "supervisor": os.getpid(), "main": None, "restarts": 0,
                                "since": None, "lastExit": None}
    current: list[subprocess.Popen[bytes]] = []

    def write_state() -> None:
        write_atomic(paths.state_file(unit.name), json.dumps(state) + "\n", durable=False)

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if current and current[0].poll() is None:
            proc = current[0]
            proc.send_signal(signal.SIGTERM)
            def kill() -> None:
                if proc.poll() is None:
                    proc.kill()

            timer = threading.Timer(unit.stop_timeout, kill)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    write_atomic(paths.pid_file(unit.name), f"{os.getpid()}\n", durable=False)
    write_state()
    failures = 0
    try:
        while not stopping.is_set():
            fd = _open_log(log)
            code: int | None = None
            try:
                env, uid, gid, groups = _as_user(unit)  # each run: a user made after the unit still works
                proc = subprocess.Popen(unit.command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env,
                                        cwd="/", user=uid, group=gid, extra_groups=groups)
            except KeyError:
                proc = None
                _say(log, f"cannot start {unit.name}: no user {unit.user!r} on this machine")
                code = 127
            except OSError as err:
                proc = None
                _say(log, f"cannot start {unit.command[0]}: {err.strerror or err}")
                code = 127
            finally:
                os.close(fd)
            started = time.monotonic()
            if proc is not None:
                current[:] = [proc]
                state.update(main=proc.pid, since=time.time())
                write_state()
                _say(log, f"started {unit.name} (pid {proc.pid})")
                code = proc.wait()
                current.clear()
            state.update(main=None, lastExit=code)
            if stopping.is_set():
                _say(log, f"stopped {unit.name} ({_describe(code)})")
                break
            failures = 1 if time.monotonic() - started >= STABLE_AFTER else failures + 1
            delay = backoff(failures)
            state["restarts"] = int(state["restarts"]) + 1  # type: ignore[call-overload]
            write_state()
            _say(log, f"{unit.name} exited on its own ({_describe(code)}); restarting in {delay:g} s")
            stopping.wait(delay)
    finally:
        paths.state_file(unit.name).unlink(missing_ok=True)
        paths.pid_file(unit.name).unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m flex.service.supervisor NAME", file=sys.stderr)
        return 2
    paths = ServicePaths.from_env()
    return supervise(paths, load_unit(paths, argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
