"""Printing a log file as `tail [-n N] [-f]` does: `flex daemon logs` and `flex service logs`."""

from __future__ import annotations

import collections
import sys
import time
from typing import TextIO

__all__ = ["tail_file"]


def tail_file(f: TextIO, last: int | None, follow: bool) -> None:
    """The last ``last`` lines of ``f`` (all of them when None), then, with ``follow``, what is appended."""
    sys.stdout.write("".join(f if last is None else collections.deque(f, maxlen=last) if last else []))
    sys.stdout.flush()
    while follow:
        line = f.readline()
        if line:
            sys.stdout.write(line)
            sys.stdout.flush()
        else:
            time.sleep(0.2)
