"""The runner's view of the runtime on this machine: the container store of FLEX_HOME, images, and the
few runtime verbs reconcile needs.

Creating, stopping, listing and removing use the runtime in-process. Starting and exec go through the
`flex runtime` command: a detached start forks a monitor (the container's parent, never the runner: a
restarted runner finds its containers running), and fork() in the runner's multi-threaded process could
inherit a lock another thread holds; exec's output must be captured for conditions. Both cost a process
start, not a container start.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flex.errors import FlexError, NotFound, Unavailable
from flex.pids import pid_alive
from flex.runtime.base.home import Home
from flex.runtime.containers.create import CreateOptions, create_container
from flex.runtime.containers.image_source import StoreImages
from flex.runtime.containers.store import Container, Containers

__all__ = ["CONFIG_LABEL", "ENV_LABEL", "GENERATION_LABEL", "Machine"]

ENV_LABEL = "flex.dev/environment"
# what the container was made from (a hash of devcontainer, env and source) and at which spec generation
CONFIG_LABEL = "flex.dev/config"
# variables `flex runtime exec` itself depends on: passed on its command line, never through its environment
_OWN_ENV = {"PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR", "LANG", "LC_ALL", "SHELL", "USER"}
GENERATION_LABEL = "flex.dev/generation"


class Machine:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.containers = Containers(Home.open(home))
        self.images = StoreImages(self.containers.home, self.containers.db)

    @property
    def rootless(self) -> bool:
        return self.containers.rootless

    def _flex(self, *args: str, capture: bool = True, timeout: float | None = 300,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)  # the same FLEX_HOME (and run directory) as ours: never set one of our own
        env.pop("FLEX_DEBUG", None)
        env.update(extra_env or {})
        try:
            return subprocess.run([sys.executable, "-m", "flex", "runtime", *args], env=env, text=True,
                                  capture_output=capture, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/",
                                  errors="replace")
        except subprocess.TimeoutExpired as err:
            raise Unavailable(f"flex runtime {args[0]} took longer than {timeout} s") from err

    # --- containers ----------------------------------------------------------------------------------
    def of_environment(self, env_id: str) -> list[Container]:
        return self.containers.with_labels({ENV_LABEL: env_id})

    def settle(self, env_id: str) -> Container | None:
        """The environment's one container: half-made ones whose creator died are removed (kill -9 of a
        runner mid-create), and extras beyond the oldest too."""
        live: list[Container] = []
        for c in self.of_environment(env_id):
            if c.state == "creating":
                if not pid_alive(c.creator_pid) or c.creator_pid == os.getpid():
                    self.remove(c.id)
                continue
            live.append(c)
        for extra in live[1:]:
            self.remove(extra.id)
        return live[0] if live else None

    def create(self, opts: CreateOptions) -> Container:
        return create_container(self.containers, self.images, opts)

    def start(self, c: Container) -> Container:
        r = self._flex("start", c.id)
        if r.returncode != 0:
            raise FlexError(f"starting container {c.name} failed: {_last_line(r.stderr) or f'exit {r.returncode}'}")
        return self.containers.get(c.id)

    def stop(self, c: Container, timeout: float = 10.0) -> Container:
        return self.containers.stop(c.id, timeout)

    def remove(self, cid: str) -> None:
        with contextlib.suppress(NotFound):
            self.containers.remove(cid, force=True)

    def apply_resources(self, c: Container, cpus: float | None, memory: int | None) -> bool:
        """CPU as a weight (burst into idle CPU, the request under contention) and memory as a limit, live;
        True if they changed."""
        from flex.runtime.containers.update import apply_resources

        return apply_resources(self.containers, c, cpus, memory)

    def add_capabilities(self, c: Container, caps: list[str]) -> bool:
        from flex.runtime.containers.update import add_capabilities

        return add_capabilities(self.containers, c, caps)

    def exec(self, c: Container, argv: list[str], user: str | None, workdir: str,
             env: dict[str, str] | None = None) -> tuple[int, str]:
        """``env``: set for the command; its values go through our environment (``-e KEY``), never on a
        command line others may read."""
        args = ["exec", "-w", workdir]
        if user:
            args += ["-u", user]
        quiet: dict[str, str] = {}
        for key, value in (env or {}).items():
            if key in _OWN_ENV or key.startswith(("FLEX_", "PYTHON", "LD_")):
                args += ["-e", f"{key}={value}"]  # our own process needs its value of these (PATH...)
            else:
                args += ["-e", key]
                quiet[key] = value
        r = self._flex(*args, c.id, *argv, timeout=None, extra_env=quiet)
        return r.returncode, (r.stdout or "") + (r.stderr or "")

    def namespace_root(self) -> Callable[[Callable[[], None], str], None] | None:
        """Rootless: a way to run a function as root in the user's namespace (to delete subordinate-owned
        files); None as root."""
        keeper = self.containers.keeper
        return keeper.call if keeper is not None else None

    # --- images --------------------------------------------------------------------------------------
    def ensure_image(self, ref: str) -> bool:
        """Pull ``ref`` unless the image store has it; True if it was pulled."""
        from flex.runtime.images.store import ImageStore
        from flex.runtime.unpack.userns import store_ownership

        store = ImageStore(self.containers.home, ownership=store_ownership())
        try:
            store.get(ref)
            return False
        except NotFound:
            pass
        from flex.runtime.transfer.pull import pull

        pull(store, ref)
        return True


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else ""
