"""Dockerfile word processing: quote removal and variable expansion in one pass, as the reference does.

``$V``, ``${V}``, ``${V:-x}``, ``${V:+x}``, ``${V-x}``, ``${V+x}``. Used only by the instructions the
reference lists (ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR); RUN, CMD and
ENTRYPOINT are left to the shell. The escape character quotes the next character; single quotes stop
expansion; an expanded value is never split again (``ENV A=$B`` keeps B's blanks).
"""

from __future__ import annotations

from collections.abc import Mapping

from flex.errors import InvalidArgument

__all__ = ["expand_word", "expand_words"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str] | None, escape: str, where: str) -> None:
        self.text, self.env, self.escape, self.where = text, env, escape, where
        self.i = 0

    def words(self, split: bool) -> list[str]:
        text, n = self.text, len(self.text)
        words: list[str] = []
        cur: list[str] = []
        have = False
        quote = ""
        while self.i < n:
            c = text[self.i]
            if c == self.escape and self.i + 1 < n and quote != "'":
                nxt = text[self.i + 1]
                if quote == '"' and nxt not in ('"', self.escape, "$"):
                    cur.append(c)
                cur.append(nxt)
                have = True
                self.i += 2
                continue
            if c == "$" and quote != "'" and self.env is not None:
                value = self._variable()
                if value is not None:
                    cur.append(value)
                    have = True
                    continue
            self.i += 1
            if quote:
                if c == quote:
                    quote = ""
                else:
                    cur.append(c)
            elif c in "'\"":
                quote, have = c, True
            elif split and c in " \t\n":
                if have or cur:
                    words.append("".join(cur))
                cur, have = [], False
            else:
                cur.append(c)
        if quote:
            raise InvalidArgument(f"{self.where}: unterminated quote in {text!r}")
        if have or cur or not split:
            words.append("".join(cur))
        return words

    def _variable(self) -> str | None:
        text, i = self.text, self.i
        assert self.env is not None
        if i + 1 >= len(text):
            return None
        if text[i + 1] == "{":
            end = self._brace(i + 2)
            self.i = end + 1
            return self._braced(text[i + 2:end])
        j = i + 1
        while j < len(text) and text[j] in _NAME_CHARS:
            j += 1
        if j == i + 1:
            return None
        self.i = j
        return self.env.get(text[i + 1:j], "")

    def _brace(self, start: int) -> int:
        depth = 1
        for j in range(start, len(self.text)):
            if self.text[j] == "{":
                depth += 1
            elif self.text[j] == "}":
                depth -= 1
                if depth == 0:
                    return j
        raise InvalidArgument(f"{self.where}: missing '}}' in {self.text!r}")

    def _braced(self, inner: str) -> str:
        assert self.env is not None
        j = 0
        while j < len(inner) and inner[j] in _NAME_CHARS:
            j += 1
        name, rest = inner[:j], inner[j:]
        if not name:
            raise InvalidArgument(f"{self.where}: bad substitution ${{{inner}}}")
        if not rest:
            return self.env.get(name, "")
        for op in (":-", ":+", "-", "+"):
            if rest.startswith(op):
                word = expand_word(rest[len(op):], self.env, escape=self.escape, where=self.where)
                value = self.env.get(name)
                if op == ":-":
                    return value if value else word
                if op == ":+":
                    return word if value else ""
                if op == "-":
                    return value if value is not None else word
                return word if value is not None else ""
        raise InvalidArgument(f"{self.where}: unsupported substitution ${{{inner}}}",
                              hint="the Dockerfile reference allows ${V}, ${V:-word} and ${V:+word}")


def expand_words(text: str, env: Mapping[str, str] | None, *, escape: str = "\\", where: str = "") -> list[str]:
    """Split ``text`` into words on blanks outside quotes, expanding variables (``env`` None: no expansion)."""
    return _Lexer(text, env, escape, where).words(split=True)


def expand_word(text: str, env: Mapping[str, str] | None, *, escape: str = "\\", where: str = "") -> str:
    """``text`` as one word: quotes removed, variables expanded, blanks kept."""
    return _Lexer(text, env, escape, where).words(split=False)[0]
