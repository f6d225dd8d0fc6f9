"""The Dockerfile reader on its own: directives, continuations, flags, forms, heredocs, expansion and
.dockerignore matching (pure functions: no containers)."""

from __future__ import annotations

import pytest

from flex.errors import InvalidArgument
from flex.runtime.build.dockerignore import parse_ignore
from flex.runtime.build.expand import expand_word, expand_words
from flex.runtime.build.parser.dockerfile import parse_dockerfile


def test_directives_continuations_and_forms() -> None:
    text = ("# escape=`\n# syntax=docker/dockerfile:1\nFROM x AS y\nRUN echo a `\n# a comment inside\n  b\n"
            'CMD ["a", "b"]\nENTRYPOINT echo [not json\nCOPY --from=y --chown=1:2 /a /b\n')
    ins = parse_dockerfile(text)
    assert [i.cmd for i in ins] == ["FROM", "RUN", "CMD", "ENTRYPOINT", "COPY"]
    assert ins[1].args == ["echo a   b"] and ins[1].line == 4 and not ins[1].json_form
    assert ins[2].json_form and ins[2].args == ["a", "b"]
    assert not ins[3].json_form and ins[3].args == ["echo [not json"]
    assert ins[4].flags == {"from": ["y"], "chown": ["1:2"]} and ins[4].args == ["/a /b"]


def test_heredocs() -> None:
    ins = parse_dockerfile("FROM x\nRUN <<EOF\necho $A\nEOF\nCOPY <<-'END' /f\n\tliteral $A\n\tEND\n")
    assert ins[1].heredocs[0].content == "echo $A\n" and ins[1].heredocs[0].expand
    assert ins[2].heredocs[0].content == "literal $A\n" and not ins[2].heredocs[0].expand


def test_errors_name_the_line() -> None:
    with pytest.raises(InvalidArgument, match=r"^Df:2: unknown instruction 'FORM'"):
        parse_dockerfile("FROM x\nFORM y\n", file="Df")
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:2: unknown flag --security for RUN"):
        parse_dockerfile("FROM x\nRUN --security=insecure true\n")
    with pytest.raises(InvalidArgument, match=r"Dockerfile:1: escape must be"):
        parse_dockerfile("# escape=x\nFROM y\n")


def test_expansion() -> None:
    env = {"A": "x y", "E": "", "P": "/p"}
    assert expand_words('K=$A L="${E:-d} q" M=\'$A\' N=a\\ b ${U-unset} ${E+set}', env) == \
        ["K=x y", "L=d q", "M=$A", "N=a b", "unset", "set"]
    assert expand_word("${P:+$P/bin}:${U:+no}\\$P", env) == "/p/bin:$P"
    with pytest.raises(InvalidArgument, match="unsupported substitution"):
        expand_word("${A/x/y}", env)


def test_dockerignore() -> None:
    ig = parse_ignore("# comment\n*.log\n!keep.log\nbuild/\n**/node_modules\ndocs/*.md\n")
    assert ig.excluded("a.log") and not ig.excluded("keep.log")
    assert ig.excluded("build/out/x") and ig.excluded("src/app/node_modules/pkg/index.js")
    assert ig.excluded("docs/a.md") and not ig.excluded("docs/sub/a.md") and not ig.excluded("src/a.py")
