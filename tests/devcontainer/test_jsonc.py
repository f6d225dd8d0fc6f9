"""The JSONC parser: JSON plus comments and trailing commas, positions for every value, and one precise
error (line, column, what was expected) for everything else."""

from __future__ import annotations

import json

import pytest

from flex.devcontainer.jsonc import MAX_DEPTH, JSONCSyntaxError, Position, parse
from flex.errors import InvalidConfiguration


def test_plain_json_parses_as_the_standard_library_does() -> None:
    text = '{"a": [1, -2, 3.5, true, false, null, "x\\n\\u00e9\\ud83d\\ude00"], "b": {}, "c": []}'
    assert parse(text).value == json.loads(text)


def test_comments_and_trailing_commas() -> None:
    text = """// leading comment
    {
      /* block
         comment */ "image": "debian", // trailing comment
      "forwardPorts": [3000, 8000,],
      "features": {"a": {},},
    }
    // end"""
    assert parse(text).value == {"image": "debian", "forwardPorts": [3000, 8000], "features": {"a": {}}}


def test_comment_markers_inside_strings_are_text() -> None:
    assert parse('{"url": "http://x/*y*/", "c": "//"}').value == {"url": "http://x/*y*/", "c": "//"}


def test_a_utf8_bom_is_skipped() -> None:
    assert parse('\ufeff{"a": 1}').value == {"a": 1}


def test_numbers_follow_javascript() -> None:
    # devcontainer tools are JavaScript: 1.0 and 1e3 are integers there, and print as such
    assert parse("[1.0, 1e3, -0.5, 2.5e-3, 9007199254740993]").value == [1, 1000, -0.5, 0.0025, 9007199254740992]


def test_positions_of_values_and_keys() -> None:
    doc = parse('{\n  "image": "x",\n\t"ports": [1,\n    22]\n}')
    assert doc.values[""] == Position(1, 1)
    assert doc.keys["/image"] == Position(2, 3)
    assert doc.values["/image"] == Position(2, 12)
    assert doc.keys["/ports"] == Position(3, 2)  # a tab is one column
    assert doc.values["/ports/1"] == Position(4, 5)
    assert doc.position("/ports", key=True) == Position(3, 2)
    assert doc.position("/ports") == Position(3, 11)


def test_pointer_tokens_are_escaped() -> None:
    doc = parse('{"a/b": {"c~d": 1}}')
    assert doc.values["/a~1b/c~0d"] == Position(1, 17)


@pytest.mark.parametrize(("text", "line", "column", "says"), [
    ("", 1, 1, "expected a value"),
    ("{", 1, 2, "expected a property name"),
    ('{"a": 1 "b": 2}', 1, 9, "expected ',' or '}'"),
    ('{"a" 1}', 1, 6, "expected ':'"),
    ("{a: 1}", 1, 2, "property names must be double-quoted"),
    ("{'a': 1}", 1, 2, "single-quoted property names"),
    ('{"a": \'x\'}', 1, 7, "single-quoted strings"),
    ('{"a": 0x10}', 1, 7, "hexadecimal"),
    ('{"a": 010}', 1, 7, "leading zeros"),
    ('{"a": +1}', 1, 7, "cannot start with '+'"),
    ('{"a": .5}', 1, 7, "cannot start with '.'"),
    ('{"a": 1.}', 1, 8, "unexpected '.' in a number"),
    ('{"a": NaN}', 1, 7, "NaN is not JSON"),
    ('{"a": Infinity}', 1, 7, "Infinity is not JSON"),
    ('{"a": undefined}', 1, 7, "undefined is not JSON"),
    ('{"a": yes}', 1, 7, "unexpected word 'yes'"),
    ('{"a": 1e400}', 1, 7, "out of range"),
    ('[1,,2]', 1, 4, "expected a value"),
    ('[,]', 1, 2, "expected a value"),
    ('{,}', 1, 2, "expected a property name"),
    ('{"a": 1,,}', 1, 9, "expected a property name"),
    ('[1 2]', 1, 4, "expected ',' or ']'"),
    ('{"a": "x\ny"}', 1, 9, "unterminated string"),
    ('{"a": "x\ty"}', 1, 9, "control characters must be escaped"),
    ('{"a": "\\q"}', 1, 8, "invalid escape \\q"),
    ('{"a": "\\u12"}', 1, 8, "4 hexadecimal digits"),
    ('["\\ud800"]', 1, 2, "surrogate"),
    ('{"a": "abc', 1, 11, "unterminated string"),
    ("{} {}", 1, 4, "expected end of file"),
    ("/* never closed\n{}", 1, 1, "unterminated /* comment"),
    ('{\n  "image": "x",\n  "image": "y"\n}', 3, 3, "duplicate property 'image' (first at line 2 column 3)"),
    ('{\n  "a": [\n    1,\n    2\n  }', 5, 3, "expected ',' or ']'"),
])
def test_bad_input_is_one_error_with_line_and_column(text: str, line: int, column: int, says: str) -> None:
    with pytest.raises(JSONCSyntaxError) as info:
        parse(text)
    err = info.value
    assert says in err.message
    assert (err.line, err.column) == (line, column), err.message


def test_nesting_is_limited_not_a_crash() -> None:
    parse("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JSONCSyntaxError, match="nesting deeper"):
        parse("[" * 100_000 + "]" * 100_000)


def test_mutated_input_is_parsed_or_rejected_never_a_crash() -> None:
    import random
    from pathlib import Path

    from flex.devcontainer import schema

    base = (Path(__file__).resolve().parents[2] / "examples/python/.devcontainer/devcontainer.json").read_text()
    rng = random.Random(7)
    alphabet = [*'{}[]:,"\'\\/*\n tfn0-.e+1', "\u2028", "\x00", "é", "//", "/*", "*/", "\\u"]
    parsed = rejected = 0
    for _ in range(3000):
        text = list(base)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                del text[i]
            elif op < 0.8:
                text.insert(i, rng.choice(alphabet))
            else:
                text[i] = rng.choice(alphabet)
        try:
            doc = parse("".join(text))
        except JSONCSyntaxError as err:
            rejected += 1
            assert err.line >= 1 and err.column >= 1
            continue
        parsed += 1
        try:
            schema.validate(doc.value, doc, "f.json")
        except InvalidConfiguration as err:
            assert err.details["line"] >= 1
    assert parsed > 100 and rejected > 100  # both paths were exercised
