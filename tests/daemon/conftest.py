"""Fixtures for `flex daemon` and `flex up`: the real CLI as the mode's user (root, or flextest rootless) in the
mode's FLEX_HOME, whose image store holds the minbase image the runtime fixtures make."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import remove_later
from tests.runner.conftest import unmount_disk_images
from tests.runtime.containers.conftest import (  # noqa: F401  (fixtures, re-exported for these tests)
    USER,
    Mode,
    delegated,
    homes,
    image,
    images,
    mode,
    workdir,
)


@dataclass
class Flex:
    """`flex ...` as the mode's user, in the mode's FLEX_HOME, with no saved login (so: the local daemon)."""

    mode: Mode
    config_home: Path

    def env(self) -> dict[str, str]:
        env = self.mode.env()
        env.pop("FLEX_URL", None)
        env.pop("FLEX_TOKEN", None)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        env.pop("NO_COLOR", None)
        return env

    def argv(self, *args: str) -> list[str]:
        argv = self.mode.python_argv("-m", "flex", *args)
        if self.mode.rootless:  # runuser drops the environment: give it what env() says
            i = argv.index("env") + 1
            argv[i:i] = [f"XDG_CONFIG_HOME={self.config_home}"]
        return argv

    def run(self, *args: str, cwd: Path | str = "/", timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd, input=input)

    def ok(self, *args: str, cwd: Path | str = "/", timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = self.run(*args, cwd=cwd, timeout=timeout)
        assert r.returncode == 0, f"flex {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}\n" \
                                  f"daemon log:\n{self.daemon_log()[-4000:]}"
        return r

    def daemon_log(self) -> str:
        log = self.mode.home / "daemon" / "daemon.log"
        try:
            return log.read_text(errors="replace")
        except OSError:
            return ""

    def daemon_state(self) -> dict[str, Any]:
        return json.loads((self.mode.home / "daemon" / "state.json").read_text())  # type: ignore[no-any-return]

    def project(self, name: str, config: dict[str, Any], files: dict[str, str] | None = None) -> Path:
        """A folder owned by the mode's user holding .devcontainer/devcontainer.json (and ``files``)."""
        folder = self.mode.home / "projects" / name
        shutil.rmtree(folder, ignore_errors=True)
        (folder / ".devcontainer").mkdir(parents=True)
        (folder / ".devcontainer" / "devcontainer.json").write_text(json.dumps(config, indent=2))
        for rel, text in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        if self.mode.rootless:
            uid = pwd.getpwnam(USER).pw_uid
            for p in [self.mode.home / "projects", *folder.rglob("*"), folder]:
                os.lchown(p, uid, uid)
        return folder


@pytest.fixture
def flex(mode: Mode, tmp_path: Path) -> Iterator[Flex]:  # noqa: F811
    config_home = mode.home / "xdg-config"
    config_home.mkdir(exist_ok=True)
    if mode.rootless:
        os.chown(config_home, pwd.getpwnam(USER).pw_uid, -1)
    f = Flex(mode, config_home)
    try:
        yield f
    finally:
        f.run("daemon", "stop", timeout=120)
        unmount_disk_images(mode.home)  # environments outlive the daemon: their disk images stay mounted
        for env_dir in ("daemon", "runner", "projects"):
            remove_later(mode.home / env_dir)
