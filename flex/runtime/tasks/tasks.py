"""Running a created container's process: attached (the caller waits and gets the exit code) or detached
(a forked monitor waits), plus ``exec`` of more processes.

Whoever calls ``crun create`` first makes itself a child subreaper, so the container's PID 1 becomes
its child when crun exits, and ``waitpid`` gives the real exit status (as conmon does). Between create
and start: cgroup delegation for --docker, network attach, then the record says ``running``. Output is
copied to the container's log file (``logs``) and, when attached, to our stdout/stderr.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flex.atomic import write_atomic
from flex.errors import FlexError, NotFound
from flex.runtime.base.home import Home
from flex.runtime.base.metadata import MetadataDB
from flex.runtime.base.procfs import proc_stat
from flex.runtime.cgroups import cgroups
from flex.runtime.containers.rootfs import ensure_rootfs
from flex.runtime.containers.store import Container, Containers
from flex.runtime.tasks import inside

if TYPE_CHECKING:  # console (socket, termios) is imported only for -t
    from flex.runtime.tasks.console import ConsoleSocket

__all__ = ["CommandNotFound", "ExecFailed", "PreparedExec", "exec_process", "exec_user", "prepare_exec",
           "start_attached", "start_detached"]


class ExecFailed(FlexError):
    """The OCI runtime could not start an exec'd command (it never ran): exit 126, as Docker's."""

    kind = "ExecFailed"
    exit_code = 126


class CommandNotFound(ExecFailed):
    """The exec'd command is not in the container (or not on its PATH): exit 127, as Docker's."""

    kind = "CommandNotFound"
    exit_code = 127

_PR_SET_CHILD_SUBREAPER = 36


def _subreaper() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _create(store: Containers, c: Container, *, stdin: Any, stdout: Any, stderr: Any,
            console: ConsoleSocket | None) -> tuple[int, int | None]:
    """crun create; returns (PID 1 on the host, pty master fd or None)."""
    bundle = store.bundle(c.id)
    if c.id not in store.mounted_here:  # (rootless, looking costs a fork into the user's namespace)
        ensure_rootfs(bundle, c.idmap, store.keeper)
    pid_file = bundle / "pid"
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
    errlog = bundle / "create.err"
    with open(errlog, "wb") as err_out:
        proc = store.runtime.create_popen(
            c.id, bundle, pid_file=pid_file, console_socket=console.path if console else None,
            stdin=stdin, stdout=stdout if console is None else subprocess.DEVNULL,
            stderr=stderr if console is None else err_out, log_file=bundle / "crun.log",
            enter_cgroups=_cgroups_to_enter(store, c))
        master = None
        try:
            if console is not None:
                master = console.receive()
            rc = _wait_exited(proc, 120)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0 or not pid_file.exists():
        text = "\n".join(p.read_text(errors="replace").strip() for p in (errlog, bundle / "crun.log")
                         if p.exists()).strip()
        if master is not None:
            os.close(master)
        raise FlexError(f"creating container {c.name} failed: {text.splitlines()[-1] if text else f'exit {rc}'}")
    return int(pid_file.read_text()), master


def _cgroups_to_enter(store: Containers, c: Container) -> list[Path]:
    """``--userns keep-id`` on cgroup v1: crun's join of PID 1 to the container's cgroup fails unseen, because
    v1 lets only a writer whose euid is the task's uid (or real root) move it, and PID 1 is already the
    container's root, a subuid, not the user. So `crun create` itself starts in the container's cgroup (made
    here first, cpuset filled in) and PID 1 is born there: its limits hold, `kill --all` finds it, and its
    cgroup namespace is rooted at its own cgroup, where dockerd inside can make its groups."""
    if c.keep_id is None or store.keeper is None or not c.cgroup or cgroups.is_v2():
        return []
    cgroups.ensure_parent(c.cgroup)
    # v1 hierarchies only: the v2 one of a hybrid host holds no controllers, and crun leaves PID 1 at its root
    return [d / "cgroup.procs" for d in cgroups.cgroup_dirs(c.cgroup) if not (d / "cgroup.controllers").exists()]


def _delegate_cgroup(store: Containers, c: Container) -> None:
    """Give the container's cgroup to its root, for dockerd inside. Under keep-id that root is a subuid, which
    only the user's namespace may chown to (the ids below are that namespace's)."""
    keep, keeper = c.keep_id, store.keeper
    if keep is None or keeper is None:
        cgroups.delegate(c.cgroup or "", c.idmap.host_uid(0), c.idmap.host_gid(0))
        return
    inner = keep.inner(store.rootless_idmap())
    uid, gid, rel = inner.host_uid(0), inner.host_gid(0), c.cgroup or ""
    keeper.call(lambda: cgroups.delegate(rel, uid, gid), "giving the container its cgroup")


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc.wait(timeout)`` that returns the moment it exits: Popen's own polls with sleeps that double up
    to 50 ms (Python 3.11), so a 20 ms `crun create` was collected up to 30 ms late."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # gone already (not yet reaped), or no pidfd in this kernel
        return proc.wait(timeout=timeout)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    return proc.wait()


def _before_start(store: Containers, c: Container, pid: int, monitor_pid: int | None) -> None:
    if c.options.get("docker") and c.cgroup:
        _delegate_cgroup(store, c)
    ports: list[dict[str, Any]] = []
    if c.options.get("net", "none") != "none":
        networks = store.networks()
        attached = networks.attach(c.id, pid)
        ports = [dataclasses.asdict(p) for p in attached.ports]
    store.set_state(c.id, state="running", pid=pid, monitor_pid=monitor_pid, started_at=time.time(),
                    exit_code=None, finished_at=None, ports=json.dumps(ports))


def _start(store: Containers, c: Container, pid: int) -> None:
    try:
        store.runtime.start(c.id)
    except FlexError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise


def _reap_until(pid: int, block: bool) -> int | None:
    """Reap children (we are a subreaper); the exit code once ``pid`` is among them."""
    while True:
        try:
            got, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None
        if got == 0:
            return None
        if got == pid:
            return _exit_code(status)


def _pump(pid: int, routes: dict[int, list[int]], stdin_to: int | None) -> int:
    """Copy data between fds until PID 1 exits; returns its exit code. A pidfd wakes us the moment it
    exits (no polling delay on the start path)."""
    src = dict(routes)
    if stdin_to is not None:
        src[0] = [stdin_to]
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    code: int | None = None
    try:
        while code is None:
            readable: list[int] = []
            watch = list(src) + ([pidfd] if pidfd >= 0 else [])
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(watch, [], [], 0.5 if pidfd >= 0 else 0.05)
            for fd in readable:
                if fd == pidfd:
                    continue
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    del src[fd]
                    if fd == 0 and stdin_to is not None and stdin_to not in routes:
                        os.close(stdin_to)  # EOF on our stdin → EOF on the container's
                    continue
                for out in src[fd]:
                    with contextlib.suppress(OSError):
                        os.write(out, data)
            code = _reap_until(pid, block=False)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    for fd in list(routes):  # whatever is still buffered
        with contextlib.suppress(OSError):
            while select.select([fd], [], [], 0)[0]:
                data = os.read(fd, 65536)
                if not data:
                    break
                for out in routes[fd]:
                    os.write(out, data)
    return code


def _open_log(store: Containers, c: Container) -> int:
    """The container's log for appending. crun gives the container's stdio to its root, which under
    ``--userns keep-id`` is a subuid: the file is given back to the user (keeper id 0) before a start."""
    path = store.bundle(c.id) / "log"
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except PermissionError:
        if store.keeper is None:
            raise
    store.keeper.call(lambda: os.chown(path, 0, 0), "taking back the container's log")
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def start_attached(store: Containers, c: Container, *, interactive: bool, tty: bool, stdout: int = 1,
                   stderr: int = 2) -> int:
    """Start ``c`` with our terminal or stdio attached; returns the exit code of its command. Its output
    goes to ``stdout``/``stderr`` (fds; a builder passes a pipe it reads)."""
    if not tty and not c.options.get("docker") and c.options.get("net", "none") == "none" and (
            c.keep_id is None or not c.cgroup):  # (keep-id: `crun create` enters the cgroup first)
        return _run_attached_plain(store, c, interactive=interactive, stdout=stdout, stderr=stderr)
    _subreaper()
    bundle = store.bundle(c.id)
    log = _open_log(store, c)
    if tty:  # (termios and the console socket: only for -t)
        from flex.runtime.tasks.console import ConsoleSocket, console_size, raw_terminal, resize_on_sigwinch
    if tty and (size := console_size(0)) is not None:
        # the pty gets our size before the command runs (a SIGWINCH later would race with it)
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["consoleSize"] = size
        write_atomic(config_path, json.dumps(config), mode=0o600, durable=False)
    console = ConsoleSocket() if tty else None
    out_r = out_w = err_r = err_w = -1
    try:
        if console is None:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            pid, master = _create(store, c, stdin=None if interactive else subprocess.DEVNULL,
                                  stdout=out_w, stderr=err_w, console=None)
            os.close(out_w)
            os.close(err_w)
        else:
            pid, master = _create(store, c, stdin=subprocess.DEVNULL, stdout=None, stderr=None, console=console)
        forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2)
        old = {s: signal.signal(s, lambda sig, _f: os.kill(pid, sig)) for s in forwarded}
        try:
            _before_start(store, c, pid, os.getpid())
            _start(store, c, pid)
            if master is not None:
                with raw_terminal(0), resize_on_sigwinch(0, master):
                    code = _pump(pid, {master: [1, log]}, master if interactive else None)
            else:
                code = _pump(pid, {out_r: [stdout, log], err_r: [stderr, log]}, None)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        store.record_exit(c.id, code, durable=not c.auto_remove)
        return code
    finally:
        for fd in (out_r, err_r, log):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if console is not None:
            console.close()


def _run_attached_plain(store: Containers, c: Container, *, interactive: bool, stdout: int = 1,
                        stderr: int = 2) -> int:
    """The common case (no terminal, no Docker, no network to attach): one `crun run`, which creates,
    starts and waits, and exits with the container's status. One process fewer on the start path."""
    bundle = store.bundle(c.id)
    log = _open_log(store, c)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        store.set_state(c.id, state="running", pid=None, monitor_pid=os.getpid(), started_at=time.time(),
                        exit_code=None, finished_at=None)
        enter = store.keeper.enter_fn() if store.keeper is not None else None
        args = ["run", "--bundle", str(bundle), "--pid-file", str(bundle / "pid"), c.id]
        if store.runtime.binary.endswith("crun"):
            args.insert(0, f"--log=file:{bundle / 'crun.log'}")
        proc = subprocess.Popen(store.runtime.argv(*args, direct=enter is not None), preexec_fn=enter,
                                stdin=None if interactive else subprocess.DEVNULL, stdout=out_w, stderr=err_w)
        os.close(out_w)
        os.close(err_w)

        def forward(sig: int, _frame: object) -> None:
            with contextlib.suppress(FlexError):
                store.runtime.kill(c.id, str(sig))

        forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
        old = {s: signal.signal(s, forward) for s in forwarded}
        try:
            code = _pump(proc.pid, {out_r: [stdout, log], err_r: [stderr, log]}, None)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        proc.returncode = code
        crun_log = bundle / "crun.log"
        if code != 0 and crun_log.exists() and crun_log.stat().st_size:
            # crun itself failed (not the command): say why, as create would have
            text = crun_log.read_text(errors="replace").strip().splitlines()
            if text and not (bundle / "pid").exists():
                store.record_exit(c.id, code, durable=not c.auto_remove)
                raise FlexError(f"creating container {c.name} failed: {text[-1]}")
        store.record_exit(c.id, code, durable=not c.auto_remove)
        return code
    finally:
        for fd in (out_r, err_r, log):
            with contextlib.suppress(OSError):
                os.close(fd)


def start_detached(store: Containers, c: Container) -> None:
    """Start ``c`` in the background; a forked monitor waits for it, records the exit, honours --rm."""
    tty = bool(c.options.get("tty"))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the monitor
        os.close(r)
        code = 0
        try:
            os.setsid()
            if os.fork() != 0:  # double fork: the monitor is nobody's child (no zombie in a runner)
                os._exit(0)
            _subreaper()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            log = _open_log(store, c)
            if tty:
                from flex.runtime.tasks.console import ConsoleSocket
            console = ConsoleSocket() if tty else None
            try:
                pid, master = _create(store, c, stdin=subprocess.DEVNULL, stdout=log, stderr=log, console=console)
            except FlexError as err:
                os.write(w, f"err {err}".encode())
                os._exit(1)
            os.write(w, f"ok {pid}".encode())
            os.close(w)
            exit_code = _pump(pid, {master: [log]}, None) if master is not None else _reap_until(pid, block=True)
            mine = Containers(Home.open(store.home.root), MetadataDB(store.db.path), rootless=store.rootless)
            mine.record_exit(c.id, exit_code if exit_code is not None else -1, durable=not c.auto_remove)
            if c.auto_remove:
                mine.remove(c.id, force=True)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    msg = b"".join(chunks).decode(errors="replace")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)  # the intermediate process, gone at once
    if not msg.startswith("ok "):
        raise FlexError(msg.removeprefix("err ") or f"creating container {c.name} failed")
    pid = int(msg.split()[1])
    _before_start(store, c, pid, _monitor_of(pid))
    _start(store, c, pid)


def _monitor_of(pid: int) -> int | None:
    """The monitor waiting for PID 1 ``pid``: its parent (the monitor is a subreaper)."""
    st = proc_stat(pid)
    return st.ppid if st is not None else None


def exec_user(store: Containers, c: Container, user: str) -> tuple[int, int, list[int]]:
    """``-u USER`` of exec in the container's own files, as Docker; the image's if it cannot be looked into."""
    if c.pid and inside.can_look_inside(c.pid):
        return inside.lookup_user(c.pid, user)
    from flex.runtime.containers.rootfs import lookup_user

    try:
        lowers = [Path(p) for p in json.loads((store.bundle(c.id) / "image.json").read_text())["lowers"]]
    except (OSError, ValueError, KeyError):
        lowers = []
    return lookup_user(lowers, user)


@dataclasses.dataclass
class PreparedExec:
    """An exec ready to run: ``argv`` is the OCI runtime's; with a terminal, ``console`` receives its master.
    ``check(code)`` after the run tells crun's own failure (255) apart; ``close()`` removes what it left."""

    argv: list[str]
    command: str
    name: str
    process_file: Path
    log_file: Path
    console: ConsoleSocket | None

    def check(self, code: int) -> int:
        if code == 255:  # crun's own failure, or the command's exit status 255: the log tells them apart
            _raise_exec_failure(self.log_file, self.command, self.name)
        return code

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
        for path in (self.process_file, self.log_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


_STALE_PROCESS_FILE = 300.0  # s: crun reads an exec's process file as it starts


def _sweep_process_files(bundle: Path) -> None:
    """Process files (their env may hold secrets) that a caller killed mid-exec (kill -9 of a runner) left."""
    cutoff = time.time() - _STALE_PROCESS_FILE
    for old in bundle.glob("exec-*.json"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()


def prepare_exec(store: Containers, c: Container, args: list[str], *, tty: bool, env: list[str],
                 workdir: str | None, user: tuple[int, int, list[int]] | None,
                 size: dict[str, int] | None = None, term: str = "xterm") -> PreparedExec:
    """The process of an exec of ``args`` in the running container ``c`` (``env``: KEY=VALUE, or KEY for our
    own value, as docker exec); ``size``: the terminal's OCI ``consoleSize``; ``term``: TERM with a terminal
    when the container's environment has none. Raises CommandNotFound before crun runs for a missing command."""
    if c.state != "running":
        raise NotFound(f"container {c.name} is not running")
    bundle = store.bundle(c.id)
    config = json.loads((bundle / "config.json").read_text())
    proc = dict(config["process"])
    proc["args"] = args
    proc["terminal"] = tty
    if workdir:
        proc["cwd"] = workdir
    if user is not None:
        proc["user"] = {"uid": user[0], "gid": user[1], "additionalGids": user[2]}
    merged = {e.partition("=")[0]: e for e in proc["env"]}
    if tty and "TERM" not in merged:  # as run -t does (containers/create.py), for a container made without -t
        merged["TERM"] = f"TERM={term}"
    for e in env:
        key, sep, _ = e.partition("=")
        if not sep:  # -e KEY: from our own environment, as docker exec (a value kept off the command line)
            if key not in os.environ:
                continue
            e = f"{key}={os.environ[key]}"
        merged[key] = e
    proc["env"] = list(merged.values())
    if c.pid and inside.find_executable(c.pid, args[0], proc["env"], proc["cwd"]) is False:
        # as Docker: 127 and one line, rather than crun's own text from inside the container
        raise CommandNotFound(f"{args[0]!r} not found in container {c.name}",
                              hint="give the full path, or check the container's PATH")
    _sweep_process_files(bundle)
    token = os.urandom(6).hex()
    pfile = bundle / f"exec-{token}.json"
    if tty and size is not None:
        proc["consoleSize"] = size
    write_atomic(pfile, json.dumps(proc), mode=0o600, durable=False)  # its env may hold secrets
    console = None
    if tty:
        from flex.runtime.tasks.console import ConsoleSocket

        console = ConsoleSocket()
    log = bundle / f"exec-{token}.log"
    argv = store.runtime.exec_argv(c.id, pfile, tty=tty, console_socket=console.path if console else None,
                                   log_file=log)
    return PreparedExec(argv, args[0], c.name, pfile, log, console)


def exec_process(store: Containers, c: Container, args: list[str], *, tty: bool, interactive: bool,
                 env: list[str], workdir: str | None, user: tuple[int, int, list[int]] | None) -> int:
    """Run ``args`` in the running container ``c`` with our stdio; returns its exit code."""
    size = None
    if tty:
        from flex.runtime.tasks.console import console_size, raw_terminal, resize_on_sigwinch

        size = console_size(0)
    prepared = prepare_exec(store, c, args, tty=tty, env=env, workdir=workdir, user=user, size=size,
                            term=os.environ.get("TERM") or "xterm")
    try:
        if prepared.console is None:
            code = subprocess.call(prepared.argv, stdin=None if interactive else subprocess.DEVNULL)
        else:
            p = subprocess.Popen(prepared.argv, stdin=subprocess.DEVNULL)
            try:
                master = prepared.console.receive()
            except BaseException:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)  # crun that failed before sending the terminal is gone at once
                _raise_exec_failure(prepared.log_file, args[0], c.name)
                raise
            try:
                with raw_terminal(0), resize_on_sigwinch(0, master):
                    code = _pump(p.pid, {master: [1]}, master if interactive else None)
            finally:
                os.close(master)
                p.poll()
        return prepared.check(code)
    finally:
        prepared.close()


def _raise_exec_failure(log: Path, command: str, name: str) -> None:
    """When crun logged why it could not start ``command``, say so in one line."""
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return
    if not text:
        return
    # crun's log has no newlines between messages: the cause is at the end
    if "not found in $PATH" in text or text.endswith("No such file or directory"):
        raise CommandNotFound(f"{command!r} not found in container {name}",
                              hint="give the full path, or check the container's PATH")
    if text.endswith("Permission denied"):
        raise ExecFailed(f"{command!r} in container {name} is not executable (permission denied)")
    raise ExecFailed(f"cannot run {command!r} in container {name}: {text.splitlines()[-1]}")

