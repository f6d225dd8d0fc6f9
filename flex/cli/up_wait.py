"""Waiting for an environment to be Ready, showing its steps: each condition as it turns true, with the time
it took; the phase; the failure that stops it. Plain lines when stderr is not a terminal; colour only on a
terminal and without NO_COLOR."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from flex.errors import FailedPrecondition, FlexError, InvalidConfiguration, NotFound, Unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flex.api import Environment
    from flex.client import FlexClient

__all__ = ["Progress", "failure", "is_ready", "wait_ready"]

STEPS = ("Scheduled", "VolumeReady", "SourceReady", "ImageReady", "ContainerReady", "LifecycleReady", "Ready")
_WATCH_SECONDS = 30.0
_CONFIG_REASONS = {"InvalidDevcontainer", "NoDevcontainer", "ComposeNotSupported", "BuildNotSupported"}


def is_ready(env: Environment) -> bool:
    c = env.status.condition("Ready")
    return (env.status.observed_generation == env.metadata.generation and env.status.phase == "running"
            and c is not None and c.status == "True" and not env.metadata.deleting)


def failure(env: Environment, image: str | None = None) -> FlexError | None:
    """The error to stop waiting with: the environment failed at the generation asked for."""
    if env.status.phase != "failed" or env.status.observed_generation != env.metadata.generation:
        return None
    c = env.status.condition("Ready")
    reason, message = (c.reason, c.message) if c else ("Failed", env.status.message or "failed")
    name = env.metadata.name
    if reason in _CONFIG_REASONS:
        return InvalidConfiguration(f"{name}: {message}", hint="fix the devcontainer.json, then run `flex up` again")
    if reason == "ImagePullFailed":
        image = image or "IMAGE"
        make = f"`flex image bootstrap {image}` makes a Debian base without a registry; " \
            if image.startswith("flex.local/") or image == "IMAGE" else ""
        return Unavailable(f"{name}: {message}",
                           hint=f"{make}`flex image pull {image}` fetches it; then run `flex up` again")
    return FailedPrecondition(f"{name}: {reason}: {message}", hint=f"see `flex show {name}`; fix it, then `flex up`")


class Progress:
    def __init__(self, out: TextIO | None = None, *, quiet: bool = False) -> None:
        self.out = out or sys.stderr
        self.quiet = quiet
        self.tty = self.out.isatty()
        self.color = self.tty and not os.environ.get("NO_COLOR")
        self.start = self.last = time.monotonic()
        self.seen: dict[str, tuple[str, str, str]] = {}
        self.phase: str | None = None

    def _paint(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        now = time.monotonic()
        self.line(f"{self._paint('32', '✓') if self.color else '-'} {text} ({now - self.last:.1f}s)")
        self.last = now

    def update(self, env: Environment) -> None:
        gen = env.metadata.generation
        if env.status.phase != self.phase:
            self.phase = env.status.phase
            self.line(self._paint("2", f"  phase: {self.phase}"))
        for c in sorted(env.status.conditions, key=lambda c: STEPS.index(c.type) if c.type in STEPS else 99):
            if c.observed_generation not in (None, gen):
                continue
            key = (c.status, c.reason, c.message)
            if self.seen.get(c.type) == key:
                continue
            self.seen[c.type] = key
            if c.status == "True":
                self.step(f"{c.type:<15} {c.message or c.reason}")
            elif c.type not in ("Ready",) and c.reason not in ("", "Pending"):
                self.line(self._paint("33", f"  {c.type:<15} {c.reason}: {c.message}"))

    def done(self, text: str) -> None:
        self.line(f"{text} in {time.monotonic() - self.start:.1f}s")


def wait_ready(client: FlexClient, name: str, generation: int, progress: Progress, *,
               interval: float = 0.1, image: str | None = None) -> Environment:
    """Until the environment is Ready at ``generation`` (or later); its failure raised as a FlexError. Each
    change comes from a watch the moment the runner writes it (a poll every ``interval`` s would add half
    of that to every step, and load the daemon the runner shares the CPU with); a read every time the watch
    ends, and polling where no watch is to be had."""
    while True:
        env = _get(client, name)
        if _done(env, generation, progress, image):
            return env
        started, seen = time.monotonic(), False
        for changed in _changes(client, env):
            seen = True
            if _done(changed, generation, progress, image):
                return changed
        if not seen and time.monotonic() - started < interval:
            time.sleep(interval)  # the watch ended at once: poll


def _get(client: FlexClient, name: str) -> Environment:
    try:
        return client.get_environment(name)
    except NotFound:
        raise NotFound(f"environment {name!r} was deleted while `flex up` waited for it") from None


def _done(env: Environment, generation: int, progress: Progress, image: str | None) -> bool:
    progress.update(env)
    if env.metadata.generation >= generation:
        if is_ready(env):
            return True
        err = failure(env, image)
        if err is not None:
            raise err
    return False


def _changes(client: FlexClient, env: Environment) -> Iterator[Environment]:
    """``env``'s next versions from a watch after its resourceVersion; ends when the watch does (its time is
    up, it broke, or the version is too old: the caller reads again)."""
    try:
        for ev in client.watch_environments(env.metadata.resource_version, timeout=_WATCH_SECONDS):
            if ev.object.metadata.id != env.metadata.id:
                continue
            if ev.type == "DELETED":
                raise NotFound(f"environment {env.metadata.name!r} was deleted while `flex up` waited for it")
            yield ev.object
    except NotFound:
        raise
    except FlexError:  # Gone, a broken stream, a control plane without watches: read (or poll) instead
        return
