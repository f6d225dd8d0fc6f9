"""Driver for an OCI runtime binary (crun; runc as fallback): create/start/state/kill/delete/exec/update.

Every call is one subprocess with ``--root`` pointing at FLEX_HOME's own state directory, so flex never
sees (or disturbs) containers of other tools. Rootless, each call runs inside the user's long-lived
namespaces (``prefix`` = nsenter ..., see userns.py). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from flex.errors import FailedPrecondition, FlexError, NotFound

__all__ = ["OCIRuntime", "find_runtime"]

# writes its own pid into each file named before "--", then execs the rest (no Python pre-exec hook: the
# callers have threads)
_ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def find_runtime() -> str:
    """crun, else runc; FLEX_OCI_RUNTIME names another (a name on PATH or a path)."""
    import os

    wanted = os.environ.get("FLEX_OCI_RUNTIME")
    if wanted:
        path = shutil.which(wanted)
        if path is None:
            raise FailedPrecondition(f"FLEX_OCI_RUNTIME={wanted}: not found")
        return path
    for name in ("crun", "runc"):
        path = shutil.which(name)
        if path:
            return path
    raise FailedPrecondition("no OCI runtime found (crun or runc)", hint="apt-get install crun")


class OCIRuntime:
    def __init__(self, state_root: Path, *, binary: str | None = None, prefix: Sequence[str] = (),
                 cgroup_manager: str | None = "cgroupfs") -> None:
        self.binary = binary or find_runtime()
        self.state_root = state_root
        self.prefix = list(prefix)
        self.cgroup_manager = cgroup_manager if self.binary.endswith("crun") else None

    def argv(self, *args: str, direct: bool = False) -> list[str]:
        """The command line; ``direct`` leaves out the prefix (the caller enters the namespaces itself)."""
        base = [*([] if direct else self.prefix), self.binary, "--root", str(self.state_root)]
        if self.cgroup_manager:
            base.append(f"--cgroup-manager={self.cgroup_manager}")
        return [*base, *args]

    def _run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            if "does not exist" in msg or "No such file" in msg:
                raise NotFound(f"{Path(self.binary).name} {args[0]}: {msg}")
            raise FlexError(f"{Path(self.binary).name} {args[0]} failed: {msg}")
        return proc

    def create_popen(self, cid: str, bundle: Path, *, pid_file: Path, console_socket: Path | None = None,
                     stdin: int | IO[Any] | None = None, stdout: int | IO[Any] | None = None,
                     stderr: int | IO[Any] | None = None, pass_fds: Sequence[int] = (),
                     log_file: Path | None = None, enter_cgroups: Sequence[Path] = ()
                     ) -> subprocess.Popen[bytes]:
        """Start ``create``; the container's stdio are the ones given here (without a terminal).
        ``enter_cgroups``: ``cgroup.procs`` files the process writes itself into before the runtime runs, so
        the container's PID 1 is born in those cgroups (and its cgroup namespace is rooted there)."""
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if log_file is not None and self.binary.endswith("crun"):
            # crun's own errors: kept apart from the container's stderr
            args = [f"--log=file:{log_file}", *args]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        argv = self.argv(*args, cid)
        if enter_cgroups:
            argv = ["/bin/sh", "-c", _ENTER, "sh", *map(str, enter_cgroups), "--", *argv]
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=tuple(pass_fds))

    def start(self, cid: str) -> None:
        self._run("start", cid)

    def state(self, cid: str) -> dict[str, Any] | None:
        proc = self._run("state", cid, check=False)
        if proc.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def list_ids(self) -> list[str]:
        """Containers the runtime has state for: one directory each under its root (crun and runc)."""
        try:
            return sorted(p.name for p in self.state_root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def kill(self, cid: str, signal: str = "TERM", *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), cid, signal]
        proc = self._run(*args, check=False)
        if proc.returncode != 0 and self.state(cid) is None:
            raise NotFound(f"container {cid} is not known to the OCI runtime")

    def delete(self, cid: str, *, force: bool = False) -> None:
        if not (self.state_root / cid).exists():
            return  # never created, or `run` already deleted it: spare a process
        self._run("delete", *(["--force"] if force else []), cid, check=False)

    def update(self, cid: str, resources_file: Path) -> None:
        self._run("update", "--resources", str(resources_file), cid)

    def exec_argv(self, cid: str, process_file: Path, *, tty: bool, console_socket: Path | None = None,
                  pid_file: Path | None = None, log_file: Path | None = None) -> list[str]:
        """``log_file`` (crun): its own errors go there, apart from the process's stderr."""
        args = ["exec", "--process", str(process_file)]
        if log_file is not None and self.binary.endswith("crun"):
            args = [f"--log=file:{log_file}", *args]
        if tty:
            args += ["--tty"]
            if console_socket is not None:
                args += ["--console-socket", str(console_socket)]
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        return self.argv(*args, cid)
