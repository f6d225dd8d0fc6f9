"""The rootless user's long-lived user + mount namespace (the "keeper"), in which flex mounts container
root filesystems and runs the OCI runtime.

An unprivileged user cannot mount an overlay on the host, only inside a user namespace it owns; and a
container's rootfs must be mounted where the OCI runtime can see it. So a rootless runner keeps one
``sleep`` process in a user namespace (0 → the user, 1..65536 → its /etc/subuid range) with its own
mount namespace, and runs `crun`, `mount` and `umount` there through nsenter, as podman does with its
pause process. If the keeper dies (reboot, kill), its mounts go with it; containers already running keep
theirs, and GC cleans the records. Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from flex.atomic import write_atomic
from flex.errors import FailedPrecondition
from flex.runtime.base.procfs import proc_stat
from flex.runtime.userns.idmap import IdMap

__all__ = ["Keeper"]

_libc = ctypes.CDLL(None, use_errno=True)


class Keeper:
    def __init__(self, run_dir: Path, idmap: IdMap) -> None:
        self.run_dir = run_dir
        self.idmap = idmap
        self.pid_file = run_dir / "userns.pid"
        self._pid: int | None = None

    def _alive(self, pid: int) -> bool:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "sleep":
                return False
            lines = Path(f"/proc/{pid}/uid_map").read_text().strip().splitlines()
        except OSError:
            return False
        st = proc_stat(pid)
        if st is None or st.zombie:  # a killed keeper may linger as a zombie: no namespaces left to enter
            return False
        try:
            os.stat(f"/proc/{pid}/ns/mnt")
            user_ns = os.stat(f"/proc/{pid}/ns/user").st_ino
        except (OSError, IndexError):
            return False
        return len(lines) == len(self.idmap.uids) and user_ns != os.stat("/proc/self/ns/user").st_ino

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def ensure(self) -> int:
        if self._pid is not None:
            return self._pid
        pid = self.running_pid()
        if pid is None:
            with open(self.run_dir / "userns.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                pid = self.running_pid() or self._spawn()
        self._pid = pid
        return pid

    def _spawn(self) -> int:
        (_, su, nu), (_, sg, ng) = self.idmap.uids[1], self.idmap.gids[1]
        argv = ["unshare", "--map-root-user", f"--map-users={su},1,{nu}", f"--map-groups={sg},1,{ng}",
                "--mount", "--propagation", "private", "--", "sleep", "infinity"]
        self._kill_unready()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, cwd="/")
        # recorded before it is ready: if we are killed now, the next spawn finds and ends it
        self._write_pid(proc.pid)
        deadline = time.monotonic() + 10
        while not self._alive(proc.pid):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise FailedPrecondition(f"could not create the rootless user namespace: {err}",
                                         hint="check /etc/subuid and /etc/subgid (newuidmap must be installed)")
            if time.monotonic() > deadline:
                proc.kill()
                raise FailedPrecondition("timed out creating the rootless user namespace")
            time.sleep(0.002)
        if proc.stderr:
            proc.stderr.close()
        return proc.pid

    def _write_pid(self, pid: int) -> None:
        write_atomic(self.pid_file, str(pid), durable=False)  # a live process; meaningless after a reboot

    def _kill_unready(self) -> None:
        """End a keeper whose creator died before it was ready (it is ours: same uid, our pid file)."""
        try:
            pid = int(self.pid_file.read_text())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            owner = os.stat(f"/proc/{pid}").st_uid
        except (OSError, ValueError):
            return
        if comm in ("unshare", "sleep") and owner == os.getuid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    def prefix(self) -> list[str]:
        """argv prefix that runs a command as root inside the keeper's namespaces."""
        return ["nsenter", "-t", str(self.ensure()), "-U", "-m", "--preserve-credentials", "--"]

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.prefix(), *argv], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise FailedPrecondition(f"{argv[0]} in the user namespace failed: {proc.stderr.strip()}")
        return proc

    def enter_fn(self) -> Callable[[], None]:
        """A ``preexec_fn`` that moves a forked child into the keeper's namespaces before it execs (saves
        exec'ing nsenter on the start path)."""
        pid = self.ensure()
        paths = [f"/proc/{pid}/ns/user", f"/proc/{pid}/ns/mnt"]

        def enter() -> None:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                if _libc.setns(fd, 0) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {path}")
                os.close(fd)

        return enter

    def call(self, fn: Callable[[], None], what: str) -> None:
        """Run ``fn`` as root inside the keeper's namespaces, in a forked child: a fork and two setns
        calls cost far less than exec'ing nsenter and a tool on the start path."""
        pid = self.ensure()
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                os.close(r)
                for ns in ("user", "mnt"):
                    fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
                    if _libc.setns(fd, 0) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {ns}: {os.strerror(ctypes.get_errno())}")
                    os.close(fd)
                fn()
                code = 0
            except BaseException as err:  # reported to the parent through the pipe
                with contextlib.suppress(OSError):
                    os.write(w, str(err).encode()[:4000])
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace")
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise FailedPrecondition(f"{what} in the user namespace failed: {msg}")

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
