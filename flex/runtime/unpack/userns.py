"""Rootless unpack: apply layers inside a user namespace so files get the shifted ids on disk.

A runner that is not root maps container id 0 → its own uid and 1..65535 → its /etc/subuid range (the
same map its containers use). A helper process (`python -m flex.runtime.unpack.userns`) unshares a
user namespace, we write its maps with newuidmap/newgidmap, and it applies layers sent to it as JSON
lines; chown inside the namespace then stores the shifted ids, and overlay xattrs use the user.*
namespace (mounted later with ``userxattr``). Root unpacks in-process, unshifted (containers idmap the
lower dirs). Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flex.errors import FailedPrecondition, FlexError, error_for_kind
from flex.runtime.diff.tarsafe import LayerStats
from flex.runtime.userns.idmap import rootless_map

__all__ = ["UsernsApplier", "applier_for_host", "rootless_ranges", "store_ownership"]

_CLONE_NEWUSER = 0x10000000



def rootless_ranges() -> tuple[int, int, tuple[int, int], tuple[int, int]]:
    """(uid, gid, (subuid start, count), (subgid start, count)) of the calling user."""
    m = rootless_map()  # the same ranges, and the same cap, as the containers' user namespaces
    (_, uid, _), (_, su, nu) = m.uids
    (_, gid, _), (_, sg, ng) = m.gids
    return uid, gid, (su, nu), (sg, ng)


def store_ownership() -> str:
    """How this process stores layer ownership: "unshifted" as root, else the id map it applies."""
    if os.geteuid() == 0:
        return "unshifted"
    uid, gid, (su, nu), (sg, ng) = rootless_ranges()
    return f"shifted:uid=0:{uid}:1,1:{su}:{nu};gid=0:{gid}:1,1:{sg}:{ng}"


class UsernsApplier:
    """Applies layers in a helper process living in the rootless user namespace."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        uid, gid, (su, nu), (sg, ng) = rootless_ranges()
        for tool in ("newuidmap", "newgidmap"):
            if shutil.which(tool) is None:
                raise FailedPrecondition(f"{tool} is not installed", hint="apt-get install uidmap")
        proc = subprocess.Popen([sys.executable, "-m", "flex.runtime.unpack.userns"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "unshared":
            proc.kill()
            raise FailedPrecondition("could not create a user namespace for unpacking",
                                     hint="check kernel.unprivileged_userns_clone / user.max_user_namespaces")
        for tool, own, start, count in (("newuidmap", uid, su, nu), ("newgidmap", gid, sg, ng)):
            res = subprocess.run([tool, str(proc.pid), "0", str(own), "1", "1", str(start), str(count)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                proc.kill()
                raise FailedPrecondition(f"{tool} failed: {res.stderr.strip()}",
                                         hint="check /etc/subuid and /etc/subgid (one range per user)")
        proc.stdin.write("mapped\n")
        proc.stdin.flush()
        self._proc = proc
        return proc

    def __call__(self, dest: Path, blob: Path, lowers: Sequence[Path]) -> tuple[str, LayerStats]:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"dest": str(dest), "blob": str(blob), "lowers": [str(p) for p in lowers]})
                         + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise FlexError("the unpack helper died", hint="run with --debug")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise error_for_kind(reply.get("kind", "Error"), reply.get("message", "unpack failed"),
                                 hint=reply.get("hint"))
        return reply["diff_id"], LayerStats(**reply["stats"])

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.wait(timeout=30)
            self._proc = None


def applier_for_host() -> UsernsApplier | None:
    return None if os.geteuid() == 0 else UsernsApplier()


def _worker() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER) != 0:
        print(f"error {os.strerror(ctypes.get_errno())}", flush=True)
        return 1
    print("unshared", flush=True)
    if sys.stdin.readline().strip() != "mapped":
        return 1
    from flex.runtime.unpack.unpacker import apply_layer_file

    for line in sys.stdin:
        job: dict[str, Any] = json.loads(line)
        try:
            diff_id, stats = apply_layer_file(Path(job["dest"]), Path(job["blob"]),
                                              [Path(p) for p in job["lowers"]], userns=True)
            reply: dict[str, Any] = {"ok": True, "diff_id": diff_id, "stats": asdict(stats)}
        except FlexError as err:
            reply = {"ok": False, "kind": err.kind, "message": err.message, "hint": err.hint}
        except OSError as err:
            reply = {"ok": False, "kind": "Error", "message": f"unpack failed: {err}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
