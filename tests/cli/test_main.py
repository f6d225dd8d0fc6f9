"""The `flex` command as a person meets it: help, version, usage errors and exit codes."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from flex.cli import main as cli_main
from flex.errors import NotFound
from tests.conftest import run_flex


def test_version() -> None:
    r = run_flex("--version")
    assert r.code == 0
    assert r.stdout.strip().startswith("flex ")


def test_help_lists_every_command_group() -> None:
    r = run_flex("--help")
    assert r.code == 0
    for name in cli_main.COMMANDS:
        assert name in r.stdout


def test_unknown_command_is_a_usage_error() -> None:
    r = run_flex("no-such-command")
    assert r.code == 2
    assert "no-such-command" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_flex_error_prints_one_line_and_a_hint_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    def register(app: typer.Typer) -> None:
        @app.command("boom")
        def boom() -> None:
            raise NotFound("environment 'e1' does not exist", hint="list them with: flex env list")

    monkeypatch.setitem(cli_main.COMMANDS, "boom", "flex_test_boom")
    monkeypatch.setitem(sys.modules, "flex_test_boom", type(sys)("flex_test_boom"))
    sys.modules["flex_test_boom"].register = register  # type: ignore[attr-defined]
    assert cli_main.main(["boom"]) == 3
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: environment 'e1' does not exist", "hint: list them with: flex env list"]


def test_an_unexpected_exception_has_no_traceback_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    def register(app: typer.Typer) -> None:
        @app.command("bug")
        def bug() -> None:
            raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli_main.COMMANDS, "bug", "flex_test_bug")
    monkeypatch.setitem(sys.modules, "flex_test_bug", type(sys)("flex_test_bug"))
    sys.modules["flex_test_bug"].register = register  # type: ignore[attr-defined]
    assert cli_main.main(["bug"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err
    assert "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        cli_main.main(["--debug", "bug"])


@pytest.mark.parametrize("args", [["image", "pull"], ["image", "inspect"], ["image", "rm"], ["image", "push", "-",
                                  "127.0.0.1:1/x:1"], ["image", "export", "-", "/dev/null"], ["runtime", "run"],
                                  ["runtime", "create"]])
def test_a_bad_image_reference_is_the_same_error_everywhere(args: list[str]) -> None:
    argv = [a if a != "-" else "Bad::Name" for a in args]
    if "Bad::Name" not in argv:
        argv.append("Bad::Name")
    if argv[0] == "runtime":
        argv.append("true")
    # a FLEX_HOME others may search, as the default /var/lib/flex is (pytest's tmp_path is below a 0700 dir)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        os.chmod(d, 0o711)
        r = run_flex(*argv, env={"FLEX_HOME": str(Path(d) / "home")})
    assert r.code == 7, (argv, r)
    assert r.stderr.splitlines()[0] == "error: invalid repository name 'library/Bad:' in image reference 'Bad::Name'"


@pytest.mark.parametrize(("args", "message"), [
    (["Bad::Name"], "error: invalid repository name 'library/Bad:' in image reference 'Bad::Name'"),
    (["ok:1", "--variant", "tiny"], "error: --variant 'tiny': not an mmdebstrap variant"),
])
def test_bootstrap_refuses_bad_input_before_building(args: list[str], message: str, tmp_path: Path) -> None:
    # no mmdebstrap on PATH: a check that came after the build would fail on that instead
    r = run_flex("image", "bootstrap", *args, env={"FLEX_HOME": str(tmp_path / "home"), "PATH": str(tmp_path)})
    assert (r.code, r.stderr.splitlines()[0]) == (7, message), r


@pytest.mark.parametrize("command", ["run", "create"])
def test_every_runtime_run_flag_has_help(command: str) -> None:
    r = run_flex("runtime", command, "--help", env={"COLUMNS": "220", "TERM": "dumb"})
    assert r.code == 0, r.stderr
    rows = [line.strip("│ ") for line in r.stdout.splitlines() if line.startswith("│ -")]
    assert len(rows) >= 10, r.stdout
    for row in rows:
        last = re.split(r"\s{2,}", row.strip())[-1]
        assert not last.startswith("-") and last not in ("TEXT", "INTEGER"), f"no help text: {row!r}"
