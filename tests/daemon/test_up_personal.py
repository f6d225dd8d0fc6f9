"""What `flex up` brings of the user into the environment: the git identity of the folder on this machine,
the dotfiles of --dotfiles-repository (from the local git daemon, installed once per container), and --shell
through a control plane's exec stream (the daemon's own API on its socket, as `--server unix:...`)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.daemon.conftest import USER, Flex
from tests.runner.conftest import GitServer, git_server  # noqa: F401  (the fixture)
from tests.runtime.containers.conftest import Mode, image_for

pytestmark = [pytest.mark.userns, pytest.mark.timeout(900)]

_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
INSTALL = "#!/bin/sh\necho ran >> \"$HOME/dotfiles-ran\"\necho \"$(id -un) $(pwd)\" > \"$HOME/dotfiles-how\"\n"


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "safe.directory=*", "-C", str(folder), *args], check=True,
                   env=_GIT_ENV, capture_output=True)


def _own(mode: Mode, folder: Path) -> None:
    if mode.rootless:
        uid = pwd.getpwnam(USER).pw_uid
        for p in [folder, *folder.rglob("*")]:
            os.lchown(p, uid, uid)


def test_git_identity_dotfiles_once_per_container_and_a_shell_through_a_control_plane(
        flex: Flex, images: dict[str, str], workdir: Path, git_server: GitServer) -> None:  # noqa: F811
    image = image_for(images, workdir, flex.mode, include=("git",))
    config = {"image": image}
    folder = flex.project("personal", config)
    # the folder's own repository says who commits here (as `git config user.email` in it answers)
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "config", "user.name", "Ada Lovelace")
    _git(folder, "config", "user.email", "ada@example.invalid")
    _git(folder, "config", "credential.helper", "store")
    _own(flex.mode, folder)
    dotfiles = git_server.repo("dotfiles", {"install.sh": INSTALL})

    r = flex.ok("up", str(folder), "--dotfiles-repository", dotfiles, "--json")
    assert json.loads(r.stdout)["outcome"] == "success"  # stdout holds the JSON only; the install logs on stderr
    assert "dotfiles: running ./install.sh in /root/dotfiles" in r.stderr, r.stderr

    def inside(script: str) -> str:  # from / : not the workspace's repository, whose config is the host's
        return flex.ok("exec", "personal", "--", "sh", "-c", f"cd / && {script}").stdout

    assert inside("git config user.email") == "ada@example.invalid\n"
    assert inside("git config user.name") == "Ada Lovelace\n"
    assert inside("git config --global --list") == "user.name=Ada Lovelace\nuser.email=ada@example.invalid\n"
    assert flex.run("exec", "personal", "--", "sh", "-c", "cd / && git config credential.helper").returncode == 1
    # the dotfiles: a checkout (with its history) in ~/dotfiles, installed by its install.sh as remoteUser there
    assert inside("cat ~/dotfiles-how; git -C ~/dotfiles log --format=%s") == "root /root/dotfiles\ninit\n"

    # once per container: a second `up` with the same flags does not run the install again
    r = flex.ok("up", str(folder), "--dotfiles-repository", dotfiles)
    assert "already installed in this container" in r.stderr, r.stderr
    assert inside("cat ~/dotfiles-ran") == "ran\n"

    # a key already set inside is kept: an edit makes a new container, then the identity is added around it
    inside("git config --global user.name 'Someone Else'")
    assert inside("git config user.name") == "Someone Else\n"
    r = flex.ok("up", str(folder), "--git-user-email", "ada@work.invalid")  # nothing changed: no new container
    assert inside("git config user.email") == "ada@example.invalid\n"
    (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps({**config, "containerEnv": {"A": "1"}}))
    flex.ok("up", str(folder), "--git-user-email", "ada@work.invalid", "--no-git-identity")
    assert flex.run("exec", "personal", "--", "sh", "-c", "cd / && git config user.email").returncode == 1
    assert inside("test -e ~/dotfiles || echo no-dotfiles") == "no-dotfiles\n"  # (a new container: new home)

    # --shell with a control plane (here the daemon's API, named by URL as a remote one is): a git URL, and
    # the shell opens through the exec stream, as remoteUser, with the identity of the flags
    origin = git_server.repo("personal", {".devcontainer/devcontainer.json": json.dumps(config)})
    home = flex.mode.home / "daemon"
    token = (home / "server" / "admin-token").read_text().strip()
    server = ["--server", f"unix:{home / 'daemon.sock'}", "--token", token]
    r = flex.run("up", origin, "--name", "personal-remote", *server, "--git-user-email", "ada@work.invalid",
                 "--shell", input="echo inside-$(id -un)-$(cd / && git config user.email)-$(ls -A)\n")
    assert r.returncode == 0 and "inside-root-ada@work.invalid-.devcontainer" in r.stdout, r.stdout + r.stderr
    shown = json.loads(flex.ok("show", "personal-remote", "--json").stdout)
    assert shown["spec"]["source"]["git"] == origin
    flex.ok("rm", "personal-remote")
    flex.ok("rm", "personal")
