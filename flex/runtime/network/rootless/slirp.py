"""Rootless networking: slirp4netns on a container's outer namespace, and its port-forward API.

Owns starting slirp4netns on the tap in a container's outer namespace (net_outer.py; ``--mtu=65520
--disable-host-loopback``, sandboxed and with seccomp), waiting for ``--ready-fd``, the JSON API on its
unix socket (add_hostfwd; a client must shut down its write side after the request or no reply comes)
and the runner's own addresses, which the guard blocks. Also the
process helpers both modes use to find and stop flex's helper processes (by a marker in their command
line, so a recycled pid is never killed). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flex.errors import Conflict, FailedPrecondition, Unavailable

__all__ = ["GUEST_ADDRESS", "GUEST_DNS", "GUEST_GATEWAY", "add_hostfwd", "find_processes", "host_addresses",
           "start_slirp", "stop_process", "tool"]

GUEST_ADDRESS = "10.0.2.100"   # slirp4netns's fixed guest address with the default --cidr
GUEST_GATEWAY = "10.0.2.2"     # slirp4netns's router (the host, loopback hidden)
GUEST_DNS = "10.0.2.3"         # its DNS forwarder (uses the host's resolv.conf)


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise FailedPrecondition(f"{name} is not installed; rootless containers need it for networking",
                                 hint=f"apt-get install {name} (installer/install.sh does), or use --net none")
    return path


def start_slirp(pid: int, api_socket: Path, log_path: Path, *, timeout: float = 10.0,
                meanwhile: Callable[[], None] | None = None) -> int:
    """Start slirp4netns on the tap device ``tap0`` that already exists in the network namespace of
    ``pid`` (the outer namespace, see net_outer.py); returns once it is attached. ``meanwhile`` runs
    while slirp4netns starts up (the rest of the set-up: it does not depend on it). No --configure:
    the tap is a bridge port and carries no address of its own."""
    api_socket.unlink(missing_ok=True)
    rfd, wfd = os.pipe()
    cmd = [tool("slirp4netns"), "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
           f"--api-socket={api_socket}", f"--ready-fd={wfd}", str(pid), "tap0"]
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=[wfd],
                                    start_new_session=True, close_fds=True)
        os.close(wfd)
        wfd = -1
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        ready, _, _ = select.select([rfd], [], [], timeout)
        if not ready or os.read(rfd, 1) != b"1":
            proc.kill()
            proc.wait()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
            raise Unavailable(f"slirp4netns did not come up: {(tail or ['no output'])[0]}",
                              hint=f"see {log_path}")
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    # The API socket appears right after the ready byte; wait for it briefly.
    deadline = time.monotonic() + timeout
    while not api_socket.exists():
        if time.monotonic() > deadline:
            raise Unavailable(f"slirp4netns API socket {api_socket} did not appear")
        time.sleep(0.001)
    return proc.pid


def _api(api_socket: Path, request: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(api_socket))
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)  # slirp4netns replies only after EOF on the request
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    reply: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    return reply


def _free_port(host_ip: str, protocol: str) -> int:
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM) as s:
        s.bind((host_ip, 0))
        return int(s.getsockname()[1])


def add_hostfwd(api_socket: Path, host_ip: str, host_port: int, guest_port: int, protocol: str) -> int:
    """Forward ``host_ip:host_port`` to the container's ``guest_port``; returns the host port used.
    Port 0 asks the kernel for a free port first (retried if someone takes it in between)."""
    attempts = 5 if host_port == 0 else 1
    last = ""
    for _ in range(attempts):
        port = _free_port(host_ip, protocol) if host_port == 0 else host_port
        reply = _api(api_socket, {"execute": "add_hostfwd", "arguments": {
            "proto": protocol, "host_addr": host_ip, "host_port": port, "guest_port": guest_port}})
        if "error" not in reply:
            return port
        last = str(reply["error"].get("desc", reply["error"]))
    raise Conflict(f"cannot publish {host_ip}:{host_port} -> {guest_port}/{protocol}: {last}",
                   hint="is the host port already in use? (`ss -lntu`)")


def host_addresses() -> list[str]:
    """The runner's own IPv4 addresses other than loopback (slirp4netns already hides 127.0.0.0/8), read
    from the kernel's local routing table in /proc/net/fib_trie (no `ip` process: this runs per start)."""
    out: list[str] = []
    last = ""
    try:
        text = Path("/proc/net/fib_trie").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped == "/32 host LOCAL" and last and not last.startswith("127.") and last not in out:
            out.append(last)
    return out


def find_processes(marker: str) -> Iterator[int]:
    """Pids of this user's processes whose command line contains ``marker`` as one argument."""
    uid = os.getuid()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if uid != 0 and entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in args:
            yield int(entry.name)


def stop_process(pid: int, marker: str, *, timeout: float = 5.0) -> None:
    """Kill ``pid`` and wait for it, if its command line still carries ``marker``; gone is fine."""
    if not _matches(pid, marker):
        return
    try:
        pidfd = os.pidfd_open(pid)  # wait for the exit without polling; immune to pid reuse from here on
    except ProcessLookupError:
        return
    try:
        # SIGKILL straight away: slirp4netns and the forwarder hold no state worth a graceful exit, and
        # waiting for one would add to every container removal.
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child


def _matches(pid: int, marker: str, *, timeout: float = 2.0) -> bool:
    # A process spawned a moment ago may still be inside execve: the kernel closes the CLOEXEC pipe that
    # lets Popen return *before* it records the new argv, so /proc/PID/cmdline reads empty for a few
    # hundred microseconds. Wait that out instead of mistaking our helper for a stranger.
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read()
        except OSError:
            return False
        if args or time.monotonic() > deadline:
            return marker.encode() in args.split(b"\0")
        time.sleep(0.0005)
