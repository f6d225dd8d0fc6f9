"""Dockerfile text → instructions, following the Dockerfile reference's grammar.

Parser directives (``# escape=``, ``# syntax=``) only at the very top; comments and blank lines
inside continuations are dropped; the escape character joins lines; flags (``--from=x``) come first;
``RUN``/``CMD``/``ENTRYPOINT``/``SHELL``/``COPY``/``ADD``/``VOLUME`` take a JSON array when the rest is
one; ``RUN``/``COPY``/``ADD`` take heredocs (``<<EOF``). Errors say file:line.
"""

from __future__ import annotations

import json
import re

from flex.errors import InvalidArgument
from flex.runtime.build.parser.instruction import Heredoc, Instruction

__all__ = ["KNOWN", "parse_dockerfile"]

KNOWN = frozenset({"FROM", "ARG", "ENV", "LABEL", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE", "VOLUME",
                   "ENTRYPOINT", "CMD", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"})
_JSON_OK = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_HEREDOC_OK = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"--([a-z][a-z-]*)(?:=(.*))?$")
_FLAGS = {"FROM": {"platform"}, "RUN": {"mount", "network"}, "COPY": {"from", "chown", "chmod", "link"},
          "ADD": {"chown", "chmod", "link", "checksum"},
          "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"}}


def _directives(lines: list[str], file: str) -> tuple[str, int]:
    """The escape character and the index of the first line after the directives."""
    escape, seen = "\\", set()
    i = 0
    for i, raw in enumerate(lines):
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            return escape, i
        key, value = m.group(1).lower(), m.group(2)
        if key not in ("escape", "syntax", "check"):
            return escape, i  # an unknown directive is a comment, and ends the directives
        if key in seen:
            raise InvalidArgument(f"{file}:{i + 1}: parser directive {key!r} given twice")
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise InvalidArgument(f"{file}:{i + 1}: escape must be \\ or `, not {value!r}")
            escape = value
    return escape, len(lines)


def _split_flags(rest: str, where: str) -> tuple[dict[str, list[str]], str]:
    flags: dict[str, list[str]] = {}
    while rest.startswith("--"):
        word, _, tail = rest.partition(" ")
        if word == "--":
            break
        m = _FLAG.match(word)
        if not m:
            raise InvalidArgument(f"{where}: malformed flag {word!r}")
        flags.setdefault(m.group(1), []).append(m.group(2) if m.group(2) is not None else "true")
        rest = tail.lstrip()
    return flags, rest


def _json_args(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def parse_dockerfile(text: str, file: str = "Dockerfile") -> list[Instruction]:
    lines = text.replace("\r\n", "\n").split("\n")
    escape, i = _directives(lines, file)
    out: list[Instruction] = []
    n = len(lines)
    while i < n:
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts: list[str] = []
        cur = raw.lstrip()
        while True:
            body = cur.rstrip()
            if body.endswith(escape):
                parts.append(body[:-1])
                i += 1
                # comment and empty lines inside a continuation are skipped, as the reference says
                while i < n and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= n:
                    break
                cur = lines[i]
                continue
            parts.append(cur)
            i += 1
            break
        logical = "".join(parts).strip()
        where = f"{file}:{start + 1}"
        keyword, _, rest = logical.partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = more + " " + rest
        cmd = keyword.upper()
        if cmd not in KNOWN:
            raise InvalidArgument(f"{where}: unknown instruction {keyword!r}",
                                  hint="see https://docs.docker.com/reference/dockerfile/")
        rest = rest.strip()
        flags: dict[str, list[str]] = {}
        if cmd in _FLAGS:
            flags, rest = _split_flags(rest, where)
            for name in flags:
                if name not in _FLAGS[cmd]:
                    known = ", ".join(f"--{f}" for f in sorted(_FLAGS[cmd]))
                    raise InvalidArgument(f"{where}: unknown flag --{name} for {cmd}", hint=f"{cmd} takes {known}")
        heredocs: list[Heredoc] = []
        if cmd in _HEREDOC_OK and "<<" in rest:
            for m in _HEREDOC.finditer(rest):
                doc: list[str] = []
                while i < n and lines[i].strip("\t" if m.group(1) else "") != m.group(3):
                    doc.append(lines[i])
                    i += 1
                if i >= n:
                    raise InvalidArgument(f"{where}: heredoc <<{m.group(3)} is never closed",
                                          hint=f"end it with a line holding only {m.group(3)}")
                i += 1
                if m.group(1):
                    doc = [d.lstrip("\t") for d in doc]
                heredocs.append(Heredoc(m.group(3), "\n".join(doc) + "\n", expand=not m.group(2),
                                        strip_tabs=bool(m.group(1))))
        args = _json_args(rest) if cmd in _JSON_OK and not heredocs else None
        if cmd != "ONBUILD" and not rest and cmd not in ("RUN",) and not heredocs:
            raise InvalidArgument(f"{where}: {cmd} needs arguments")
        out.append(Instruction(cmd=cmd, args=args if args is not None else [rest], json_form=args is not None,
                               flags=flags, line=start + 1, file=file, original=logical, heredocs=heredocs))
    return out
