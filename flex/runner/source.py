"""An environment's source in its workspace volume: ``git clone`` of spec.source.git at ref, once.

The clone goes to FLEX_HOME/runner/tmp/ and is renamed into place, and a marker in the environment's state
directory says it is complete; without the marker a leftover (a clone cut short by kill -9) is removed and
cloned again. Source URLs are untrusted: only the git, http(s) and ssh transports (and file:// on a desktop
runner, whose user owns the machine), no prompts, no hooks from the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from flex.atomic import write_atomic
from flex.errors import FailedPrecondition, Unavailable

__all__ = ["ensure_git_source"]

_TIMEOUT = 600.0


def _git(args: list[str], cwd: Path | None, *, allow_file: bool) -> str:
    git = shutil.which("git")
    if git is None:
        raise FailedPrecondition("git is not installed on this runner", hint="apt-get install git")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
           "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
           "GIT_ALLOW_PROTOCOL": "git:http:https:ssh" + (":file" if allow_file else "")}
    try:
        proc = subprocess.run([git, "-c", "core.hooksPath=/dev/null", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"git {args[0]} took longer than {_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise Unavailable(f"git {args[0]} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout.strip()


def ensure_git_source(url: str, ref: str | None, dest: Path, marker: Path, tmp_parent: Path, *,
                      allow_file: bool) -> str:
    """Clone ``url`` at ``ref`` (branch, tag or commit; default branch if None) to ``dest``, unless done
    before; returns the commit checked out. Unavailable (retryable) if git fails."""
    if marker.exists():
        try:
            return str(json.loads(marker.read_text())["commit"])
        except (OSError, ValueError, KeyError):
            pass
    if not allow_file and url.startswith("file://"):
        raise FailedPrecondition(f"source {url}: file:// sources are only allowed on a desktop runner",
                                 hint="use a git, http(s) or ssh URL")
    tmp = tmp_parent / f"clone-{dest.parent.name}-{os.urandom(4).hex()}"
    try:
        _git(["clone", "--quiet", "--", url, str(tmp)], None, allow_file=allow_file)
        if ref is not None:
            _git(["checkout", "--quiet", ref, "--"], tmp, allow_file=allow_file)
        commit = _git(["rev-parse", "HEAD"], tmp, allow_file=allow_file)
        if dest.exists():
            shutil.rmtree(dest)  # a clone cut short earlier: it never got its marker
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_atomic(marker, json.dumps({"url": url, "ref": ref, "commit": commit}))
    return commit
