"""Start, stop and inspect supervised services (what `flex service start|stop|status|logs` call)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flex.errors import FailedPrecondition, PermissionDenied
from flex.service.paths import ServicePaths
from flex.service.unit import load_unit

__all__ = ["ServiceStatus", "logs_path", "service_status", "start_service", "stop_service"]


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | restarting (the command crashed; waiting to start it again) | stopped
    supervisor: int | None = None
    main: int | None = None
    restarts: int = 0
    since: float | None = None  # when the current run started
    last_exit: int | None = None

    def to_wire(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "supervisor": self.supervisor, "main": self.main,
                "restarts": self.restarts, "since": self.since, "lastExit": self.last_exit}


def _alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, given ``marker``, whether its command line holds it (pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return False
        return marker is None or marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return False


def _supervisor_pid(paths: ServicePaths, name: str) -> int | None:
    try:
        pid = int(paths.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid, "flex.service.supervisor") else None


def service_status(paths: ServicePaths, name: str) -> ServiceStatus:
    load_unit(paths, name)  # NotFound for an unknown name
    pid = _supervisor_pid(paths, name)
    if pid is None:
        return ServiceStatus(name, "stopped")
    try:
        state = json.loads(paths.state_file(name).read_text())
    except (OSError, ValueError):
        state = {}
    main = state.get("main")
    running = isinstance(main, int) and _alive(main)
    return ServiceStatus(name, "running" if running else "restarting", supervisor=pid,
                         main=main if running else None, restarts=int(state.get("restarts") or 0),
                         since=state.get("since") if running else None, last_exit=state.get("lastExit"))


def start_service(paths: ServicePaths, name: str, *, timeout: float = 15.0) -> ServiceStatus:
    """Start the supervisor of ``name`` (nothing to do if it runs) and wait until its command runs."""
    load_unit(paths, name)
    if _supervisor_pid(paths, name) is not None:
        return service_status(paths, name)
    _stop_orphan(paths, name)
    try:
        for d in (paths.run, paths.log):
            d.mkdir(parents=True, exist_ok=True)
        paths.log.chmod(0o750)
        open(paths.log_file(name), "ab").close()
    except PermissionError as err:
        raise PermissionDenied(f"cannot write {err.filename}: permission denied",
                               hint="run as root, or move them with FLEX_RUN and FLEX_LOG") from None
    env = {**os.environ, "FLEX_ETC": str(paths.etc), "FLEX_RUN": str(paths.run), "FLEX_LOG": str(paths.log)}
    with open(paths.log_file(name), "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flex.service.supervisor", name], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=env, cwd="/", start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = service_status(paths, name)
        if status.state == "running":
            return status
        if status.restarts or proc.poll() is not None:
            break
        time.sleep(0.05)
    raise FailedPrecondition(f"service {name} did not start: {_last_line(paths.log_file(name))}",
                             hint=f"see flex service logs {name}")


def stop_service(paths: ServicePaths, name: str) -> bool:
    """Stop ``name`` and its command; False if it was not running."""
    unit = load_unit(paths, name)
    pid = _supervisor_pid(paths, name)
    if pid is None:
        paths.pid_file(name).unlink(missing_ok=True)
        paths.state_file(name).unlink(missing_ok=True)
        return False
    main = service_status(paths, name).main
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + unit.stop_timeout + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):  # a wedged supervisor: make sure neither outlives the stop
        for p in (main, pid):
            if p is not None and _alive(p):
                os.kill(p, signal.SIGKILL)
        paths.pid_file(name).unlink(missing_ok=True)
        paths.state_file(name).unlink(missing_ok=True)
    return True


def _stop_orphan(paths: ServicePaths, name: str) -> None:
    """A supervisor killed with -9 leaves its command running: stop that one before starting another."""
    try:
        main = json.loads(paths.state_file(name).read_text()).get("main")
    except (OSError, ValueError):
        return
    if isinstance(main, int) and _alive(main):
        os.kill(main, signal.SIGTERM)
        deadline = time.monotonic() + load_unit(paths, name).stop_timeout
        while time.monotonic() < deadline and _alive(main):
            time.sleep(0.05)
        if _alive(main):
            os.kill(main, signal.SIGKILL)
    paths.state_file(name).unlink(missing_ok=True)


def logs_path(paths: ServicePaths, name: str) -> Path:
    load_unit(paths, name)
    return paths.log_file(name)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
