"""Lifecycle hooks, with marker files (as the reference CLI keeps them) so each runs when the spec says:

    onCreateCommand, updateContentCommand, postCreateCommand   once per container (marker keyed on its id)
    postStartCommand                                            on every start (keyed on id and start time)

Markers live in the environment's state directory, so a runner restart neither repeats nor forgets them.
Each hook runs in the container as remoteUser, in the workspace folder: a string through /bin/sh -c, an
array as is, an object's entries in parallel. A hook that fails is remembered for the generation it failed
in (a ``.failed`` marker): it is not run again, over and over with backoff, until the spec changes.
``ready()`` is called once the ``waitFor`` hook is done; later hooks go on after it.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from flex.atomic import write_atomic
from flex.runner.container_plan import WAIT_FOR, ContainerPlan, Hook

__all__ = ["ExecFn", "HookFailed", "run_hook", "run_hooks"]

# (argv, user, workdir) -> (exit code, combined output)
ExecFn = Callable[[list[str], str | None, str], tuple[int, str]]
_TAIL_LINES, _TAIL_CHARS = 15, 1500


class HookFailed(Exception):
    def __init__(self, hook: str, code: int, tail: str) -> None:
        super().__init__(f"{hook} exited with code {code}")
        self.hook, self.code, self.tail = hook, code, tail

    @property
    def reason(self) -> str:
        return self.hook.split(".")[0][0].upper() + self.hook.split(".")[0][1:] + "Failed"

    @property
    def message(self) -> str:
        return f"{self.hook} exited with code {self.code}" + (f"; output ends with:\n{self.tail}" if self.tail else "")


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_TAIL_LINES:])[-_TAIL_CHARS:]


def _run(hook: Hook, run: ExecFn, user: str | None, workdir: str, log: Path) -> None:
    def one(name: str, argv: list[str]) -> tuple[str, int, str]:
        code, out = run(argv, user, workdir)
        return (f"{hook.name}.{name}" if name else hook.name), code, out

    if len(hook.commands) == 1:
        results = [one(*next(iter(hook.commands.items())))]
    else:
        with cf.ThreadPoolExecutor(len(hook.commands)) as pool:
            results = list(pool.map(lambda kv: one(*kv), hook.commands.items()))
    with open(log, "a", encoding="utf-8", errors="replace") as f:
        for name, code, out in results:
            f.write(f"--- {name} (exit {code})\n{out}")
    for name, code, out in results:
        if code != 0:
            raise HookFailed(name, code, _tail(out))


def run_hook(hook: Hook, run: ExecFn, user: str | None, workdir: str, log: Path) -> None:
    """One hook now, whatever the markers say (initializeCommand, on the host); raises HookFailed."""
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run(hook, run, user, workdir, log)


def run_hooks(plan: ContainerPlan, run: ExecFn, markers: Path, container_id: str, started_at: float,
              generation: int, ready: Callable[[], None], log: Path | None = None) -> list[str]:
    """Run the hooks still due for this container and start; returns the names of those that ran. Their
    output is appended to ``log`` (default: hooks.log beside the markers)."""
    markers.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = log or markers / "hooks.log"
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ran: list[str] = []
    wait = WAIT_FOR.index(plan.wait_for)
    is_ready = False
    for hook in plan.hooks:
        if not is_ready and WAIT_FOR.index(hook.name) > wait:
            ready()
            is_ready = True
        key = f"{container_id}.{hook.name}"
        if hook.name == "postStartCommand":
            key = f"{container_id}.{started_at:.6f}.{hook.name}"
        if hook.origin:  # a feature's hook: its own marker beside the config's
            key += "." + hashlib.sha256(hook.origin.encode()).hexdigest()[:16]
        done, failed = markers / f"{key}.done", markers / f"{key}.failed"
        if done.exists():
            continue
        if failed.exists():
            with_gen = json.loads(failed.read_text())
            if with_gen.get("generation") == generation:
                raise HookFailed(with_gen["hook"], int(with_gen["code"]), str(with_gen["tail"]))
        try:
            _run(hook, run, plan.remote_user, plan.workspace_folder, log)
        except HookFailed as err:
            write_atomic(failed, json.dumps({"generation": generation, "hook": err.hook, "code": err.code,
                                             "tail": err.tail}))
            raise
        failed.unlink(missing_ok=True)
        write_atomic(done, "")
        ran.append(hook.name)
    if not is_ready:
        ready()
    return ran
