"""The Store Protocol: where a repository's objects live. Imports nothing from flex but flex.errors.

Objects are named by paths such as ``data/ab/ab12…``, ``index/…``, ``snapshots/…``, ``keys/…``,
``locks/…`` and ``config``. Every name but a lock's is derived from its content, so an object is written
once and never rewritten: ``put`` of an existing name leaves it as it is.

    store.put("index/9f…", sealed)       # whole object, or nothing, appears
    store.get("data/ab/ab…", 1024, 512)  # a byte range
    for name in store.list("snapshots/"): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["Store"]


class Store(Protocol):
    location: str

    def put(self, name: str, data: bytes) -> None: ...
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete(self, name: str) -> None: ...
