"""An environment's source in its workspace volume: ``git clone`` of spec.source.git at ref, once.

The clone goes to FLEX_HOME/runner/tmp/ and is renamed into place, and a marker in the environment's state
directory says it is complete; without the marker a leftover (a clone cut short by kill -9) is removed and
cloned again. Source URLs are untrusted: only the git, http(s) and ssh transports (and file:// on a desktop
runner, whose user owns the machine), no prompts, no hooks from the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from flex.atomic import write_atomic
from flex.errors import FailedPrecondition, Unavailable

__all__ = ["SourceRefused", "ensure_git_source"]


class SourceRefused(FailedPrecondition):
    """The workspace's repository is not one the runner will run git in (its config could run commands)."""


_TIMEOUT = 600.0
# settings a repository's own config could use to run commands on the runner, overridden on every call
_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.sshCommand=ssh",
         "-c", "credential.helper=", "-c", "core.pager=cat", "-c", "protocol.ext.allow=never"]
# what a workspace's .git/config may hold before the runner runs git in it (a container can write that file):
# anything else (filter and merge drivers, includes, proxies, upload-pack) could run a command here
_ALLOWED_CONFIG = re.compile(
    r"core\.(repositoryformatversion|filemode|bare|logallrefupdates|ignorecase|precomposeunicode|symlinks"
    r"|autocrlf|eol)|remote\.[^\n]*\.(url|fetch|pushurl)|branch\.[^\n]*\.(remote|merge|rebase)"
    r"|(user|color|alias|init|pull|push|advice|gc|safe)\.[^\n]*")


def _git(args: list[str], cwd: Path | None, *, allow_file: bool, owner: tuple[int, int] | None = None) -> str:
    git = shutil.which("git")
    if git is None:
        raise FailedPrecondition("git is not installed on this runner", hint="apt-get install git")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
           "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
           "GIT_ALLOW_PROTOCOL": "git:http:https:ssh" + (":file" if allow_file else "")}
    as_owner: dict[str, object] = {}
    if owner is not None and os.geteuid() == 0 and owner != (0, 0):
        as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []}
        env["HOME"] = "/nonexistent"  # not root's: that uid may not read it
    try:
        proc: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            [git, *_SAFE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT,
            stdin=subprocess.DEVNULL, **as_owner)
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
            done = json.loads(marker.read_text())
            if (done["url"], done["ref"]) == (url, ref) or not (dest / ".git").is_dir():
                return str(done["commit"])
            return _move_to(url, ref, dest, marker, allow_file=allow_file)
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


def _move_to(url: str, ref: str | None, dest: Path, marker: Path, *, allow_file: bool) -> str:
    """The ref (or URL) changed: fetch and check it out in the existing clone, keeping the user's other
    work there, as the workspace's owner (the container's root), never as the runner's root."""
    if not allow_file and url.startswith("file://"):
        raise FailedPrecondition(f"source {url}: file:// sources are only allowed on a desktop runner",
                                 hint="use a git, http(s) or ssh URL")
    config = dest / ".git" / "config"
    st = dest.stat()
    owner = (st.st_uid, st.st_gid)
    if config.exists():
        listed = _git(["config", "--file", str(config), "--name-only", "--list"], None, allow_file=allow_file)
        bad = [k for k in listed.splitlines() if k and not _ALLOWED_CONFIG.fullmatch(k)]
        if bad:
            raise SourceRefused(f"{dest}/.git/config sets {', '.join(sorted(set(bad))[:5])}, which could run "
                                "commands on the runner: it will not fetch a new ref there",
                                hint="check the new ref out from inside the environment, or remove those settings")
    _git(["fetch", "--quiet", "--tags", "--force", "--", url, "+refs/heads/*:refs/remotes/origin/*"], dest,
         allow_file=allow_file, owner=owner)
    _git(["remote", "set-url", "origin", url], dest, allow_file=allow_file, owner=owner)
    if ref is None:
        _git(["remote", "set-head", "origin", "--auto"], dest, allow_file=allow_file, owner=owner)
        _git(["checkout", "--quiet", "origin/HEAD", "--"], dest, allow_file=allow_file, owner=owner)
    elif _git(["branch", "--remotes", "--list", f"origin/{ref}"], dest, allow_file=allow_file, owner=owner):
        _git(["checkout", "--quiet", "-B", ref, f"origin/{ref}", "--"], dest, allow_file=allow_file, owner=owner)
    else:
        _git(["checkout", "--quiet", ref, "--"], dest, allow_file=allow_file, owner=owner)
    commit = _git(["rev-parse", "HEAD"], dest, allow_file=allow_file, owner=owner)
    write_atomic(marker, json.dumps({"url": url, "ref": ref, "commit": commit}))
    return commit
