"""A strict JSONC parser: JSON plus comments and trailing commas, nothing more, with positions.

Owns turning devcontainer.json text into Python values and remembering where each value (and each
object key) starts, so that both syntax errors and later schema errors can name a line and column.
Imports nothing from flex.

Why not json5: JSON5 also accepts single quotes, unquoted keys, hex numbers, ``+1``, ``Infinity``...
which no other devcontainer tool reads the same way; flex rejects what is not JSONC instead of guessing.
Why not a comment-stripping pass in front of ``json.loads``: the schema errors need the position of every
value, which ``json`` does not give.

Deliberate choices, each an error with a line and column:
- duplicate keys in one object (JSON.parse keeps the last, other parsers the first: ambiguous input);
- numbers that overflow a double; lone UTF-16 surrogates in ``\\u`` escapes (they cannot be printed);
- nesting deeper than ``MAX_DEPTH`` (untrusted input must not exhaust the stack).
Numbers follow JavaScript, which devcontainer tools are written in: ``1.0`` and ``1e3`` are the integers 1
and 1000, so flex prints what the reference CLI prints.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_DEPTH", "Document", "JSONCSyntaxError", "Position", "escape_pointer", "parse"]

MAX_DEPTH = 200

_WS = re.compile(r"[ \t\r\n]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_WORD = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Position:
    """1-based line and column (columns count characters, a tab is one)."""

    line: int
    column: int


class JSONCSyntaxError(ValueError):
    """The text is not JSONC; ``message`` says what was expected, ``line``/``column`` where."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"{message} at line {line} column {column}")
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Document:
    """A parsed document: the value, and where each JSON pointer's value and key start."""

    value: Any
    values: dict[str, Position] = field(default_factory=dict)
    keys: dict[str, Position] = field(default_factory=dict)

    def position(self, pointer: str, *, key: bool = False) -> Position | None:
        """Where the value at ``pointer`` starts (its key with ``key=True``, if it has one)."""
        if key and pointer in self.keys:
            return self.keys[pointer]
        return self.values.get(pointer)


def escape_pointer(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def parse(text: str) -> Document:
    """Parse JSONC text; raise JSONCSyntaxError with a line and column on anything else."""
    return _Parser(text).document()


def _describe(ch: str) -> str:
    if ch == "":
        return "end of file"
    if ch == "\n":
        return "end of line"
    if ch.isprintable() and not ch.isspace():
        return repr(ch)
    return f"character U+{ord(ch):04X}"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.i = 1 if text.startswith("\ufeff") else 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.doc = Document(None)

    # -- positions and errors -------------------------------------------------------------
    def pos(self, i: int) -> Position:
        line = bisect.bisect_right(self.line_starts, i)
        return Position(line, i - self.line_starts[line - 1] + 1)

    def fail(self, message: str, i: int | None = None) -> JSONCSyntaxError:
        p = self.pos(self.i if i is None else i)
        return JSONCSyntaxError(message, p.line, p.column)

    def peek(self) -> str:
        return self.text[self.i : self.i + 1]

    # -- whitespace and comments ----------------------------------------------------------
    def skip(self) -> None:
        text = self.text
        while True:
            m = _WS.match(text, self.i)
            assert m is not None
            self.i = m.end()
            if text.startswith("//", self.i):
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            elif text.startswith("/*", self.i):
                end = text.find("*/", self.i + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment: expected */")
                self.i = end + 2
            else:
                return

    # -- values ---------------------------------------------------------------------------
    def document(self) -> Document:
        self.skip()
        self.doc.value = self.value("", 0)
        self.skip()
        if self.i < len(self.text):
            raise self.fail(f"unexpected {_describe(self.peek())} after the JSON value: expected end of file")
        return self.doc

    def value(self, pointer: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        self.doc.values[pointer] = self.pos(self.i)
        ch = self.peek()
        if ch == "{":
            return self.object(pointer, depth)
        if ch == "[":
            return self.array(pointer, depth)
        if ch == '"':
            return self.string()
        if ch == "-" or ch.isdigit():
            return self.number()
        word = _WORD.match(self.text, self.i)
        if word is not None:
            literal = {"true": True, "false": False, "null": None}
            if word.group() in literal:
                self.i = word.end()
                return literal[word.group()]
            if word.group() in ("NaN", "Infinity", "undefined"):
                raise self.fail(f"{word.group()} is not JSON: expected a value")
            raise self.fail(f"unexpected word {word.group()!r}: expected a value (strings need double quotes)")
        if ch == "'":
            raise self.fail("single-quoted strings are not JSON: use double quotes")
        if ch in ("+", "."):
            raise self.fail(f"a number cannot start with {ch!r}: expected a value")
        raise self.fail(f"unexpected {_describe(ch)}: expected a value")

    def number(self) -> int | float:
        m = _NUMBER.match(self.text, self.i)
        if m is None:
            raise self.fail("expected a digit after '-'")
        nxt = self.text[m.end() : m.end() + 1]
        if nxt and (nxt.isalnum() or nxt in "._"):
            if m.group() in ("0", "-0") and nxt in "xXoObB":
                raise self.fail("hexadecimal, octal and binary numbers are not JSON")
            if m.group().lstrip("-") == "0" and nxt.isdigit():
                raise self.fail("numbers cannot have leading zeros")
            raise self.fail(f"unexpected {_describe(nxt)} in a number", m.end())
        text = m.group()
        self.i = m.end()
        if re.fullmatch(r"-?[0-9]+", text):
            value: int | float = int(text)
            if abs(value) <= 2**53:
                return value
        value = float(text)
        if math.isinf(value):
            raise self.fail("number out of range", m.start())
        if value.is_integer() and abs(value) < 1e21:
            return int(value)  # JavaScript has one number type: 1.0 is 1
        return value

    def string(self) -> str:
        m = _STRING.match(self.text, self.i)
        if m is None:
            self.string_error()
        assert m is not None
        raw = m.group()
        value: str = json.loads(raw) if "\\" in raw else raw[1:-1]
        if "\\" in raw and _SURROGATE.search(value):
            raise self.fail("a \\u escape is half of a UTF-16 surrogate pair")
        self.i = m.end()
        return value

    def string_error(self) -> None:
        """Say precisely why the string that starts here does not end well."""
        j = self.i + 1
        text = self.text
        while j < len(text):
            ch = text[j]
            if ch == '"':
                break
            if ch == "\\":
                esc = text[j + 1 : j + 2]
                if esc == "u":
                    if not re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2 : j + 6]):
                        raise self.fail("invalid \\u escape: expected 4 hexadecimal digits", j)
                    j += 6
                    continue
                if esc == "" or esc not in '"\\/bfnrt':
                    raise self.fail(f"invalid escape \\{esc} in a string", j)
                j += 2
                continue
            if ch == "\n":
                raise self.fail("unterminated string: expected '\"' before the end of the line", j)
            if ord(ch) < 0x20:
                raise self.fail(f"{_describe(ch)} in a string: control characters must be escaped", j)
            j += 1
        raise self.fail("unterminated string: expected '\"'", j)

    def object(self, pointer: str, depth: int) -> dict[str, Any]:
        self.i += 1
        out: dict[str, Any] = {}
        first_key: dict[str, Position] = {}
        self.skip()
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            ch = self.peek()
            if ch != '"':
                if ch == "'":
                    raise self.fail("single-quoted property names are not JSON: use double quotes")
                if ch == ",":
                    raise self.fail("unexpected ',': expected a property name")
                if _WORD.match(self.text, self.i):
                    raise self.fail("property names must be double-quoted strings")
                raise self.fail(f"unexpected {_describe(ch)}: expected a property name in double quotes")
            key_at = self.pos(self.i)
            key = self.string()
            if key in first_key:
                first = first_key[key]
                raise JSONCSyntaxError(f"duplicate property {key!r} (first at line {first.line} column "
                                       f"{first.column})", key_at.line, key_at.column)
            first_key[key] = key_at
            member = f"{pointer}/{escape_pointer(key)}"
            self.doc.keys[member] = key_at
            self.skip()
            if self.peek() != ":":
                raise self.fail(f"unexpected {_describe(self.peek())}: expected ':' after property name")
            self.i += 1
            self.skip()
            out[key] = self.value(member, depth + 1)
            self.skip()
            ch = self.peek()
            if ch == "}":
                self.i += 1
                return out
            if ch != ",":
                raise self.fail(f"unexpected {_describe(ch)}: expected ',' or '}}'")
            self.i += 1
            self.skip()
            if self.peek() == "}":  # trailing comma
                self.i += 1
                return out

    def array(self, pointer: str, depth: int) -> list[Any]:
        self.i += 1
        out: list[Any] = []
        self.skip()
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            if self.peek() == ",":
                raise self.fail("unexpected ',': expected a value")
            out.append(self.value(f"{pointer}/{len(out)}", depth + 1))
            self.skip()
            ch = self.peek()
            if ch == "]":
                self.i += 1
                return out
            if ch != ",":
                raise self.fail(f"unexpected {_describe(ch)}: expected ',' or ']'")
            self.i += 1
            self.skip()
            if self.peek() == "]":  # trailing comma
                self.i += 1
                return out
