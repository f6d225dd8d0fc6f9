"""What `flex up` brings of the user into an environment once it is ready: their git identity and their
dotfiles. Both go through the environment's exec stream, so they work the same on the local daemon and on a
remote control plane, and both run as remoteUser.

Git identity: user.name and user.email as git gives them in the folder on this machine (its repository's
config, then ~/.gitconfig, then /etc/gitconfig), or from --git-user-name / --git-user-email; written into
remoteUser's ~/.gitconfig with `git config --global`, only for a key git inside does not already have (an
image's /etc/gitconfig, a dotfiles' .gitconfig and the repository's own config win). A credential helper is
not copied: the host's (osxkeychain, libsecret, `gh auth git-credential`, `store`) names programs and files
that are not in the container, and copying `store`'s file would hand the host's tokens to every script the
repository and its features run inside. Git over SSH uses the forwarded agent instead.

Dotfiles (--dotfiles-repository, as `devcontainer up` spells it): cloned on this machine, with the user's own
git credentials, and unpacked into --dotfiles-target-path (default ~/dotfiles) as remoteUser, so neither git
nor credentials are needed inside; then the install command runs there (--dotfiles-install-command, else the
first of the reference CLI's list), or, without one, the repository's dotfiles are linked into ~. Once per
container: the marker is the reference's ~/.devcontainer/.dotfilesMarker, written before the install runs
(a failed install is reported, not retried, as the reference does).
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from flex.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from flex.cli.up_wait import Progress

__all__ = ["INSTALL_COMMANDS", "Dotfiles", "apply_dotfiles", "apply_git_identity", "dotfiles_url", "git_identity"]

# The reference CLI's order (devcontainers/cli, dotfiles).
INSTALL_COMMANDS = ("install.sh", "install", "bootstrap.sh", "bootstrap", "script/bootstrap", "setup.sh", "setup",
                    "script/setup")
_MARKER = "$HOME/.devcontainer/.dotfilesMarker"

# From /: the workspace's own repository config (the host's, bind-mounted) is not the user's global one.
_IDENTITY_SCRIPT = """\
name=$1 email=$2
cd / || exit $?
if [ -z "$name$email" ]; then :
elif command -v git >/dev/null 2>&1; then
  [ -z "$name" ] || git config --get user.name >/dev/null || git config --global user.name "$name" || exit $?
  [ -z "$email" ] || git config --get user.email >/dev/null || git config --global user.email "$email" || exit $?
elif [ ! -e "$HOME/.gitconfig" ]; then
  (umask 022; printf '%s' "$3" > "$HOME/.gitconfig") || exit $?
fi
[ -e "{marker}" ] && echo dotfiles-installed
exit 0
""".replace("{marker}", _MARKER)

_DOTFILES_SCRIPT = """\
target=$1 cmd=$2
case $target in "~") target=$HOME ;; "~/"*) target=$HOME/${target#"~/"} ;; esac
if [ -e "{marker}" ]; then cat >/dev/null; echo "dotfiles: already installed in this container"; exit 0; fi
mkdir -p "$HOME/.devcontainer" && : > "{marker}" || exit $?
if [ -e "$target" ]; then
  cat >/dev/null; echo "dotfiles: $target exists; installing from it"
else
  mkdir -p "$target" && tar -x -o -f - -C "$target" || exit $?
fi
cd "$target" || exit $?
run=
if [ -n "$cmd" ]; then
  if [ -f "./$cmd" ]; then run=./$cmd; elif [ -f "$cmd" ]; then run=$cmd
  else echo "dotfiles: could not locate $cmd in $target" >&2; exit 126; fi
else
  for f in {commands}; do if [ -e "$f" ]; then run=./$f; break; fi; done
fi
if [ -z "$run" ]; then
  for f in .[!.]* ..?*; do
    if [ -e "$f" ] && [ "$f" != .git ]; then ln -sf "$PWD/$f" "$HOME/" && echo "dotfiles: linked ~/$f"; fi
  done
  exit 0
fi
[ -x "$run" ] || chmod +x "$run" || exit $?
echo "dotfiles: running $run in $target"
exec "$run"
""".replace("{marker}", _MARKER).replace("{commands}", " ".join(INSTALL_COMMANDS))


@dataclass(frozen=True)
class Dotfiles:
    repository: str
    install_command: str | None = None
    target_path: str = "~/dotfiles"


def _git(folder: Path | None, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *(["-C", str(folder)] if folder else []), *args], capture_output=True,
                           text=True, timeout=10, stdin=subprocess.DEVNULL, cwd=folder or "/")
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = r.stdout.strip()
    return value if r.returncode == 0 and value else None


def git_identity(folder: Path | None, name: str | None = None, email: str | None = None) -> dict[str, str]:
    """user.name and user.email for the environment: the flags, else what git says in ``folder`` here (one
    git call; a folder git refuses as not safe is read as git reads it there: without its own config)."""
    found: dict[str, str] = {}
    if name is None or email is None:
        for line in (_git(folder, "config", "--get-regexp", r"^user\.(name|email)$") or "").splitlines():
            key, _, value = line.partition(" ")
            found[key.removeprefix("user.")] = value  # the last one git lists wins, as for --get
    out: dict[str, str | None] = {"name": name if name is not None else found.get("name"),
                                  "email": email if email is not None else found.get("email")}
    for which, given in out.items():
        if given is not None and any(c in given for c in "\n\r\0"):
            raise InvalidArgument(f"git user.{which} holds a line break", hint=f"set it with --git-user-{which}")
    return {k: v for k, v in out.items() if v}


def _gitconfig_text(identity: dict[str, str]) -> str:
    def quoted(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "[user]\n" + "".join(f"\t{k} = {quoted(v)}\n" for k, v in sorted(identity.items()))


def _exec(url: str, token: str | None, env: str, argv: list[str], *, input: IO[bytes] | None = None,
          out: IO[bytes] | None = None) -> int:
    import io
    import sys

    from flex.cli.exec import run_exec

    return run_exec(url, token, env, argv, interactive=False, tty=False, input=input or io.BytesIO(b""),
                    out=out or sys.stderr.buffer, err=sys.stderr.buffer)


def apply_git_identity(url: str, token: str | None, env: str, identity: dict[str, str],
                       progress: Progress) -> bool:
    """Give remoteUser the identity (keys it lacks only); returns whether the dotfiles marker is there."""
    import io

    buf = io.BytesIO()
    code = _exec(url, token, env, ["/bin/sh", "-c", _IDENTITY_SCRIPT, "sh", identity.get("name", ""),
                                   identity.get("email", ""), _gitconfig_text(identity)], out=buf)
    if code != 0:
        progress.line(f"warning: git identity: the command in {env} exited with {code}")
    elif identity:
        progress.line(f"git identity: {identity.get('name', '?')} <{identity.get('email', '?')}>")
    return b"dotfiles-installed" in buf.getvalue()


def dotfiles_url(repository: str) -> str:
    """The reference's rule: ``owner/repo`` (no ':' and not a path) means a GitHub repository."""
    if ":" not in repository and not repository.startswith(("/", "./", "../")):
        return f"https://github.com/{repository}.git"
    return repository


def _clone(repository: str, into: Path) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        r = subprocess.run(["git", "clone", "-q", "--depth", "1", dotfiles_url(repository), str(into)],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError:
        raise Unavailable("--dotfiles-repository needs git on this machine", hint="install git") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"--dotfiles-repository {repository}: git clone took over 300 s") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        raise Unavailable(f"--dotfiles-repository {repository}: git clone failed: {last}",
                          hint="check the URL and that this machine's git can reach it")


def apply_dotfiles(url: str, token: str | None, env: str, dotfiles: Dotfiles, progress: Progress) -> None:
    """Clone the repository here and install it in the environment (once per container)."""
    with tempfile.TemporaryDirectory(prefix="flex-dotfiles-") as tmp:
        repo = Path(tmp) / "repo"
        progress.line(f"dotfiles: cloning {dotfiles.repository}")
        _clone(dotfiles.repository, repo)
        with open(Path(tmp) / "repo.tar", "w+b") as packed:
            with tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(repo, arcname=".")
            packed.seek(0)
            code = _exec(url, token, env, ["/bin/sh", "-c", _DOTFILES_SCRIPT, "sh", dotfiles.target_path,
                                           dotfiles.install_command or ""], input=packed)
    if code != 0:  # as the reference: the environment is up; its user's dotfiles failed, and is told so
        progress.line(f"warning: dotfiles: the install in {env} exited with {code} (see its output above)")
    else:
        progress.step("dotfiles installed")
