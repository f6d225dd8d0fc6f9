"""``.dockerignore`` patterns (Go filepath.Match plus ``**``, ``!`` exceptions, the last match wins).

A pattern matches a path or any of its parents (``node_modules`` excludes everything below it), as
Docker's pattern matcher does; ``<Dockerfile>.dockerignore`` beside the Dockerfile takes precedence
over the context's ``.dockerignore``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ignore", "parse_ignore", "read_ignore"]


def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + "$")


@dataclass
class Ignore:
    rules: list[tuple[bool, re.Pattern[str]]]  # (exception, regex)

    @property
    def has_exceptions(self) -> bool:
        return any(exc for exc, _ in self.rules)

    def excluded(self, rel: str) -> bool:
        """``rel``: a slash-separated path relative to the context."""
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for exc, rx in self.rules:
            if any(rx.match(p) for p in prefixes):
                result = not exc
        return result


def parse_ignore(text: str) -> Ignore:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exc = line.startswith("!")
        if exc:
            line = line[1:].strip()
        line = posixpath.normpath(line).lstrip("/")
        if line in (".", ""):
            continue
        rules.append((exc, _regex(line)))
    return Ignore(rules)


def read_ignore(context: Path, dockerfile: Path) -> Ignore:
    for cand in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if cand.is_file():
            return parse_ignore(cand.read_text(errors="replace"))
    return Ignore([])
