"""Entry point of the `flex` command: lazy command groups, one error handler, documented exit codes.

Each top-level command lives in its own module with a ``register(app)`` function; only the module the
command line names is imported, so `flex config read` never pays for fastapi or pyroute2.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 auth, 6 unavailable or timeout,
7 invalid configuration (see flex/errors.py).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flex.errors import FlexError

if TYPE_CHECKING:  # typer is imported lazily: `flex runtime run` never loads it (see main())
    import typer

__all__ = ["COMMANDS", "main", "report"]

# top-level name -> module holding register(app)
COMMANDS: dict[str, str] = {
    "config": "flex.cli.config",
    "env": "flex.cli.env",
    "image": "flex.cli.image",
    "login": "flex.cli.login",
    "runner": "flex.cli.runner_agent",
    "runtime": "flex.cli.runtime",
    "server": "flex.cli.server",
}


def _build(names: Sequence[str]) -> typer.Typer:
    import typer

    app = typer.Typer(
        name="flex",
        help="Declarative developer environments: devcontainers on rootless runners.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _version(value: bool) -> None:
        if value:
            from flex import __version__

            typer.echo(f"flex {__version__}")
            raise typer.Exit(0)

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        """Declarative developer environments: devcontainers on rootless runners."""

    for name in names:
        importlib.import_module(COMMANDS[name]).register(app)
    return app


def _command_name(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def report(err: FlexError) -> None:
    """Print an error the way every flex command does: one line, then a hint line."""
    where = ""
    d = err.details
    if "file" in d and "line" in d:
        where = f" ({d['file']}:{d['line']}:{d.get('column', 1)})" if d["file"] not in err.message else ""
    print(f"error: {err.message}{where}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "runtime" in args[:2]:
        # `flex runtime run` must start a container fast: it is parsed without typer (flex/cli/runtime.py)
        from flex.cli.runtime import fast_main

        fast = fast_main(args)
        if fast is not None:
            if argv is None:
                sys.exit(fast)
            return fast
    import typer

    # typer >= 0.2x vendors click; take its exception classes from typer's own public BadParameter.
    bases = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    _ClickException: type[Exception] = bases["ClickException"]
    _UsageError: type[Exception] = bases["UsageError"]
    debug = "--debug" in args or os.environ.get("FLEX_DEBUG") == "1"
    name = _command_name(args)
    app = _build([name] if name in COMMANDS else list(COMMANDS))
    try:
        rv = app(args=args, prog_name="flex", standalone_mode=False)
    except FlexError as err:
        if debug:
            import traceback

            traceback.print_exc()
        report(err)
        code = err.exit_code
    except typer.Exit as ex:
        code = ex.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        code = 130
    except _ClickException as ex:
        ex.show()  # type: ignore[attr-defined]
        code = 2 if isinstance(ex, _UsageError) else int(ex.exit_code)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as ex:  # anything unexpected: one line, traceback only with --debug
        if debug:
            raise
        print(f"error: internal error: {type(ex).__name__}: {ex}", file=sys.stderr)
        print("hint: run again with --debug for a traceback, and report it", file=sys.stderr)
        code = 1
    else:
        code = rv if isinstance(rv, int) else 0
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
