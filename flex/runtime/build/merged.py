"""The merged view of a stack of layer directories (top first), read the way overlayfs reads it.

A whiteout (0/0 character device, or a file with ``overlay.whiteout``) hides the name below it; an
opaque directory (``overlay.opaque=y``) hides everything below it. Used for the builder's own
questions (does a directory exist) and for ``COPY --from`` a stage or an image, without mounting.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MergedView"]


class MergedView:
    def __init__(self, lowers: list[Path], xattr_prefix: str = "trusted.") -> None:
        self.lowers = lowers
        self.prefixes = ("trusted.", "user.") if xattr_prefix == "trusted." else ("user.",)

    def _xattr(self, path: Path, name: str) -> bytes | None:
        for prefix in self.prefixes:
            try:
                return os.getxattr(path, prefix + name, follow_symlinks=False)
            except OSError:
                continue
        return None

    def _whiteout(self, path: Path, st: os.stat_result) -> bool:
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return True
        return stat.S_ISREG(st.st_mode) and st.st_size == 0 and self._xattr(path, "overlay.whiteout") is not None

    def _layers_of(self, rel: str) -> list[tuple[Path, os.stat_result]]:
        """(path, lstat) of ``rel`` in each layer that shows it, top first, stopping where it is hidden."""
        parts = [p for p in rel.strip("/").split("/") if p]
        out: list[tuple[Path, os.stat_result]] = []
        for lower in self.lowers:
            cur, found = lower, True
            for i, part in enumerate(parts):
                cur = cur / part
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    found = False
                    break
                if self._whiteout(cur, st) or (i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode)):
                    return out  # hidden here, and so in every layer below
            if found:
                st = os.lstat(cur)
                out.append((cur, st))
                if not stat.S_ISDIR(st.st_mode) or self._xattr(cur, "overlay.opaque") == b"y":
                    return out
            if self._opaque_above(lower, parts):
                return out
        return out

    def _opaque_above(self, lower: Path, parts: list[str]) -> bool:
        cur = lower
        for part in parts[:-1]:
            cur = cur / part
            if self._xattr(cur, "overlay.opaque") == b"y":
                return True
        return False

    def lstat(self, rel: str) -> os.stat_result | None:
        found = self._layers_of(rel)
        return found[0][1] if found else None

    def path(self, rel: str) -> Path | None:
        found = self._layers_of(rel)
        return found[0][0] if found else None

    def listdir(self, rel: str) -> list[str]:
        names: set[str] = set()
        hidden: set[str] = set()
        for path, st in self._layers_of(rel):
            if not stat.S_ISDIR(st.st_mode):
                break
            for name in os.listdir(path):
                if name in names or name in hidden:
                    continue
                cst = os.lstat(path / name)
                (hidden if self._whiteout(path / name, cst) else names).add(name)
        return sorted(names)

    def walk(self, rel: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        """(path relative to ``rel``, the file in its layer, lstat) for ``rel`` and below, sorted."""
        top = self._layers_of(rel)
        if not top:
            return
        yield "", top[0][0], top[0][1]
        if not stat.S_ISDIR(top[0][1].st_mode):
            return

        def walk(sub: str, shown: str) -> Iterator[tuple[str, Path, os.stat_result]]:
            for name in self.listdir(sub):
                child = f"{sub.rstrip('/')}/{name}"
                found = self._layers_of(child)
                if not found:
                    continue
                r = f"{shown}/{name}" if shown else name
                yield r, found[0][0], found[0][1]
                if stat.S_ISDIR(found[0][1].st_mode):
                    yield from walk(child, r)

        yield from walk(rel, "")
