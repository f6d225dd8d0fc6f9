"""The build context: COPY/ADD sources matched in it (globs, .dockerignore), never outside it, hashed.

A source is resolved against the context without following symlinks out of it: ``..`` that leaves
the context, or an absolute path, is refused with the instruction's file:line. Files are streamed
(hashing reads them in chunks), so a context of gigabytes is never held in memory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flex.errors import InvalidArgument, NotFound
from flex.runtime.build.dockerignore import Ignore

__all__ = ["Source", "hash_tree", "match_sources", "walk_source"]


@dataclass(frozen=True)
class Source:
    path: Path      # on the host
    rel: str        # relative to the context ("." for the context itself)
    is_dir: bool


def match_sources(root: Path, pattern: str, ignore: Ignore, where: str) -> list[Source]:
    """The context entries that ``pattern`` names (after .dockerignore); a pattern matching nothing fails."""
    norm = posixpath.normpath(pattern.lstrip("/") or ".")  # "/x" means context/x, as Docker reads it
    if norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f"{where}: COPY source {pattern!r} is outside the build context",
                              hint="sources are relative to the context; move the file into it")
    if any(c in norm for c in "*?["):
        rels = sorted(os.path.relpath(p, root) for p in glob.glob(str(root / norm)))
    else:
        rels = [norm] if os.path.lexists(root / norm) else []
    out = []
    for rel in rels:
        rel = rel.replace(os.sep, "/")
        if rel != "." and ignore.excluded(rel):
            continue
        p = root / rel if rel != "." else root
        real = os.path.realpath(p)
        if os.path.islink(p):
            out.append(Source(p, rel, False))  # a symlink is copied as a link, never followed
            continue
        if not (real == str(root.resolve()) or real.startswith(str(root.resolve()) + os.sep)):
            raise InvalidArgument(f"{where}: COPY source {pattern!r} is outside the build context")
        out.append(Source(p, rel, p.is_dir()))
    if not out:
        raise NotFound(f"{where}: COPY source {pattern!r} not found in the build context",
                       hint="check the path (relative to the context) and .dockerignore")
    return out


def walk_source(src: Source, ignore: Ignore) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(path relative to the source, host path, lstat) for the source and everything below it, sorted."""
    st = os.lstat(src.path)
    yield "", src.path, st
    if not stat.S_ISDIR(st.st_mode):
        return

    def walk(d: Path, rel: str, ctx_rel: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        for name in sorted(os.listdir(d)):
            p = d / name
            r = f"{rel}/{name}" if rel else name
            cr = f"{ctx_rel}/{name}" if ctx_rel != "." else name
            if ignore.excluded(cr):
                if not ignore.has_exceptions:
                    continue
                est = os.lstat(p)
                if not stat.S_ISDIR(est.st_mode):
                    continue
                yield from walk(p, r, cr)  # an exception below may bring parts back
                continue
            est = os.lstat(p)
            yield r, p, est
            if stat.S_ISDIR(est.st_mode):
                yield from walk(p, r, cr)

    yield from walk(src.path, "", src.rel)


def hash_tree(entries: Iterator[tuple[str, Path, os.stat_result]], h: hashlib._Hash) -> None:
    """Names, types, modes and content (symlink targets) of ``entries`` into ``h`` (owners: COPY sets them)."""
    for rel, path, st in entries:
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{st.st_mode & 0o7777}\0".encode())
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        h.update(b"\1")
