"""Entry point of the `flex` command: lazy command groups, one error handler, documented exit codes.

Each top-level command lives in its own module with a ``register(app)`` function; only the module the
command line names is imported, so `flex config read` never pays for fastapi or pyroute2.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 auth, 6 unavailable or timeout,
7 invalid configuration (see flex/errors.py).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from flex.errors import FlexError

if TYPE_CHECKING:  # typer is imported lazily: `flex runtime run` never loads it (see main())
    import typer

__all__ = ["COMMANDS", "main", "report"]

# top-level name -> module holding register(app)
COMMANDS: dict[str, str] = {
    "build": "flex.cli.build",
    "backup": "flex.cli.backup",
    "config": "flex.cli.config",
    "daemon": "flex.cli.daemon",
    "delete": "flex.cli.rm",
    "env": "flex.cli.env",
    "exec": "flex.cli.exec",
    "image": "flex.cli.image",
    "login": "flex.cli.login",
    "logout": "flex.cli.login",
    "ls": "flex.cli.envs",
    "move": "flex.cli.move",
    "rebuild": "flex.cli.envs",
    "show": "flex.cli.envs",
    "start": "flex.cli.envs",
    "stop": "flex.cli.envs",
    "token": "flex.cli.token",
    "user": "flex.cli.token",
    "version": "flex.cli.token",
    "port-forward": "flex.cli.port_forward",
    "ports": "flex.cli.ports",
    "logs": "flex.cli.logs",
    "restore": "flex.cli.restore",
    "rm": "flex.cli.rm",
    "runner": "flex.cli.runner",
    "runtime": "flex.cli.runtime",
    "secret": "flex.cli.secret",
    "server": "flex.cli.server",
    "up": "flex.cli.up",
    "service": "flex.cli.service",
    "ssh": "flex.cli.ssh",
    "config-ssh": "flex.cli.ssh",
}


def _build(names: Sequence[str]) -> typer.Typer:
    import typer

    app = typer.Typer(
        name="flex",
        help="Declarative developer environments: devcontainers on rootless runners.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
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

    for module in dict.fromkeys(COMMANDS[name] for name in names):  # a module may hold several verbs
        importlib.import_module(module).register(app)
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


def _exit_now(code: int) -> NoReturn:
    """End a container start's process at once, its output flushed: without the interpreter's teardown and
    SQLite's checkpoint when the last connection closes (two fsyncs, ~5-10 ms). The WAL holds every commit
    either way, and the next writer checkpoints it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "runtime" in args[:2]:
        # `flex runtime run` must start a container fast: it is parsed without typer (flex/cli/runtime.py)
        from flex.cli.runtime import fast_main

        fast = fast_main(args)
        if fast is not None:
            if argv is None:
                _exit_now(fast)
            return fast
    if args[:1] == ["ls"]:
        # `flex ls` for the local daemon: one request over its socket, without typer (flex/cli/fast_ls.py)
        from flex.cli.fast_ls import fast_ls

        listed = fast_ls(args)
        if listed is not None:
            if argv is None:
                sys.exit(listed)
            return listed
    if args[:1] == ["up"]:
        # an unchanged `flex up` on the local daemon: two requests over its socket, without typer, httpx or
        # jsonschema (flex/cli/fast_up.py); anything else is the full command's
        from flex.cli.fast_up import fast_up

        done = fast_up(args)
        if done is not None:
            if argv is None:
                sys.exit(done)
            return done
    if args[:2] == ["ssh", "--stdio"]:
        # ssh's ProxyCommand, on every ssh, scp and sftp: without typer or httpx (flex/cli/fast_ssh.py)
        from flex.cli.fast_ssh import fast_ssh_stdio

        carried = fast_ssh_stdio(args)
        if carried is not None:
            if argv is None:
                sys.exit(carried)
            return carried
    if args[:1] == ["exec"]:
        # `flex exec ENV CMD`: without typer, httpx or pydantic (flex/cli/fast_exec.py)
        from flex.cli.fast_exec import fast_exec

        try:
            ran = fast_exec(args)
        except FlexError as err:
            report(err)
            ran = err.exit_code
        except KeyboardInterrupt:
            ran = 130
        except BrokenPipeError:
            ran = 0
        if ran is not None:
            if argv is None:
                sys.exit(ran)
            return ran
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
