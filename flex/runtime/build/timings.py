"""Per-phase wall-clock timings of a build, shown with FLEX_BUILD_TIMINGS=1 (issue 13: where a cold
build spends its time besides the RUN step's own command). Off, a phase costs one dict lookup."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

__all__ = ["phase", "report", "reset"]

_totals: dict[str, float] = {}


def _enabled() -> bool:
    return os.environ.get("FLEX_BUILD_TIMINGS", "") not in ("", "0")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    if not _enabled():
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - t


def reset() -> None:
    _totals.clear()


def report(say: Callable[[str], None]) -> None:
    if _enabled() and _totals:
        say("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in _totals.items()))
