"""A keyed work queue, as client-go's: one reconcile per key at a time, events coalesced, delays, backoff.

    q.add(env_id)              queued once however often it is added; added while being processed, it is
                               queued again when ``done`` is called (so no change is ever missed)
    key = q.get(timeout)       the next key due, now marked processing
    q.done(key)
    q.failed(key) -> delay     requeue after an exponential, jittered delay that grows per key
    q.forget(key)              a success: the key's backoff starts again from the base delay
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["WorkQueue"]


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 120.0,
                 jitter: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_delay, self.max_delay = base_delay, max_delay
        self._jitter, self._clock = jitter, clock
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._later: list[tuple[float, str]] = []
        self._failures: dict[str, int] = {}
        self._closed = False

    def add(self, key: str) -> None:
        with self._cond:
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._later, (self._clock() + delay, key))
            self._cond.notify()

    def failed(self, key: str) -> float:
        """Requeue ``key`` after base·2^(n-1) seconds (capped), times a jitter in [0.5, 1)."""
        with self._cond:
            n = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(self.max_delay, self.base_delay * 2.0 ** (n - 1)) * (0.5 + self._jitter() / 2)
        self.add_after(key, delay)
        return delay

    def failures(self, key: str) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def _promote(self) -> float | None:
        """Move due delayed keys to the ready queue; the seconds until the next one, if any."""
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            _, key = heapq.heappop(self._later)
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
        return self._later[0][0] - now if self._later else None

    def get(self, timeout: float | None = None) -> str | None:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait = self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                if self._closed:
                    return None
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._later)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
