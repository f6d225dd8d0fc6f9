"""Progress reporting for pulls and pushes: rich bars per layer on a terminal, one line per step
otherwise, nothing for library callers. Thread-safe (layers download concurrently)."""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol, TextIO

__all__ = ["LineProgress", "NullProgress", "Progress", "RichProgress", "for_terminal"]


class Progress(Protocol):
    def step(self, message: str) -> None: ...
    def start(self, item: str, total: int, what: str) -> None: ...
    def advance(self, item: str, n: int) -> None: ...
    def done(self, item: str, status: str) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def step(self, message: str) -> None: ...
    def start(self, item: str, total: int, what: str) -> None: ...
    def advance(self, item: str, n: int) -> None: ...
    def done(self, item: str, status: str) -> None: ...
    def close(self) -> None: ...


def _short(item: str) -> str:
    return item.split(":", 1)[-1][:12]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1000
    return f"{n} B"


class LineProgress:
    """One line per step, for logs and pipes."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stderr
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def step(self, message: str) -> None:
        self._print(message)

    def start(self, item: str, total: int, what: str) -> None:
        self._sizes[item] = total

    def advance(self, item: str, n: int) -> None:
        pass

    def done(self, item: str, status: str) -> None:
        size = self._sizes.get(item)
        self._print(f"{_short(item)}: {status}" + (f" ({_size(size)})" if size else ""))

    def close(self) -> None:
        pass


class RichProgress:
    """Per-layer bars with rich (imported only when a terminal asks for it)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        # stderr, like the line form: stdout carries results (and a container's output)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), transient=False, console=Console(stderr=True))
        self._p.start()
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def step(self, message: str) -> None:
        self._p.console.print(message, highlight=False, markup=False)

    def start(self, item: str, total: int, what: str) -> None:
        with self._lock:
            if item not in self._tasks:
                self._tasks[item] = self._p.add_task(f"{_short(item)} {what}", total=total or None)

    def advance(self, item: str, n: int) -> None:
        with self._lock:
            task = self._tasks.get(item)
        if task is not None:
            self._p.advance(task, n)

    def done(self, item: str, status: str) -> None:
        with self._lock:
            task = self._tasks.get(item)
        if task is not None:
            total = self._p.tasks[task].total
            self._p.update(task, description=f"{_short(item)} {status}", completed=total)

    def close(self) -> None:
        self._p.stop()


def for_terminal(quiet: bool = False) -> Progress:
    if quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return RichProgress()
    return LineProgress()
