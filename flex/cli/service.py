"""`flex service ...`: flex's own supervisor, for machines where systemd is not PID 1 (see flex/service/).

add, rm, ls, start, stop, restart, status, logs. Definitions live in FLEX_ETC/services/, pid files in FLEX_RUN,
logs in FLEX_LOG (defaults /etc/flex, /run/flex, /var/log/flex).
"""

from __future__ import annotations

import typer

__all__ = ["register"]

_NAME = typer.Argument(..., help="Service name, e.g. flex-server.")


def _since(ts: float | None) -> str:
    import time

    if not ts:
        return "-"
    s = int(time.time() - ts)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="service", help="Run flex's services under its own supervisor (no systemd needed).",
                        no_args_is_help=True)
    app.add_typer(group, name="service")

    @group.command("add")
    def add(name: str = _NAME,
            command: list[str] = typer.Argument(..., help="The command, after --."),
            env: list[str] = typer.Option([], "--env", help="K=V in the command's environment (repeat)."),
            stop_timeout: float = typer.Option(30.0, "--stop-timeout", min=0.1,
                                               help="Seconds between SIGTERM and SIGKILL on stop."),
            user: str = typer.Option(None, "--user",
                                     help="Run the command as this user (its groups, a clean environment)."),
            ) -> None:
        """Define (or redefine) a service: `flex service add NAME [--user U] [--env K=V]... -- COMMAND ARGS...`."""
        import pwd

        from flex.errors import NotFound, UsageError
        from flex.service import ServicePaths, Unit, save_unit

        environment: dict[str, str] = {}
        for item in env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--env {item!r}: expected K=V", hint="e.g. --env FLEX_HOME=/var/lib/flex")
            environment[key] = value
        if user is not None:
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise NotFound(f"--user {user!r}: no such user on this machine",
                               hint="create it first (useradd), or leave --user out to run as root") from None
        save_unit(ServicePaths.from_env(), Unit(name, list(command), environment, stop_timeout, user))
        typer.echo(f"service {name} defined", err=True)

    @group.command("rm")
    def rm(name: str = _NAME) -> None:
        """Stop a service and remove its definition (its log stays)."""
        from flex.service import ServicePaths, remove_unit, stop_service

        paths = ServicePaths.from_env()
        stop_service(paths, name)
        remove_unit(paths, name)
        typer.echo(f"service {name} removed", err=True)

    @group.command("ls")
    def ls() -> None:
        """List the services defined here and their state."""
        from flex.service import ServicePaths, service_status, unit_names

        paths = ServicePaths.from_env()
        typer.echo(f"{'NAME':<24} {'STATE':<11} {'PID':>7} {'UP':>5} {'RESTARTS':>8}")
        for n in unit_names(paths):
            s = service_status(paths, n)
            typer.echo(f"{n:<24} {s.state:<11} {s.main or '-':>7} {_since(s.since):>5} {s.restarts:>8}")

    @group.command("start")
    def start(name: str = typer.Argument(None, help="Service name (or --all)."),
              all_: bool = typer.Option(False, "--all", help="Every defined service (e.g. at boot).")) -> None:
        """Start a service under the supervisor (nothing happens if it runs)."""
        from flex.errors import UsageError
        from flex.service import ServicePaths, start_service, unit_names

        paths = ServicePaths.from_env()
        if (name is None) == (not all_):
            raise UsageError("give a service name or --all", hint="flex service ls")
        for n in unit_names(paths) if all_ else [name]:
            s = start_service(paths, n)
            typer.echo(f"{n} running (pid {s.main})", err=True)

    @group.command("stop")
    def stop(name: str = _NAME) -> None:
        """Stop a service: SIGTERM to its main process, SIGKILL after its stop timeout."""
        from flex.service import ServicePaths, stop_service

        was = stop_service(ServicePaths.from_env(), name)
        typer.echo(f"{name} stopped" if was else f"{name} was not running", err=True)

    @group.command("restart")
    def restart(name: str = _NAME) -> None:
        """Stop, then start a service."""
        from flex.service import ServicePaths, start_service, stop_service

        paths = ServicePaths.from_env()
        stop_service(paths, name)
        s = start_service(paths, name)
        typer.echo(f"{name} running (pid {s.main})", err=True)

    @group.command("status")
    def status(name: str = _NAME, json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Whether a service runs, its pid, uptime and restarts. Exit status 3 when it is not running."""
        import json

        from flex.service import ServicePaths, logs_path, service_status

        paths = ServicePaths.from_env()
        s = service_status(paths, name)
        if json_:
            typer.echo(json.dumps(s.to_wire(), indent=2))
        else:
            line = f"{name}: {s.state}"
            if s.main:
                line += f" (pid {s.main}, up {_since(s.since)})"
            if s.restarts:
                line += f"; restarted {s.restarts} times, last exit status {s.last_exit}"
            typer.echo(line)
            typer.echo(f"log: {logs_path(paths, name)}")
        if s.state != "running":
            raise typer.Exit(3)  # like `systemctl status` of an inactive unit

    @group.command("logs")
    def logs(name: str = _NAME,
             lines: int = typer.Option(50, "--lines", "-n", min=0, help="How many lines from the end."),
             follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines.")) -> None:
        """Print the end of a service's log (FLEX_LOG/NAME.log)."""
        from flex.cli.tail import tail_file
        from flex.service import ServicePaths, logs_path

        path = logs_path(ServicePaths.from_env(), name)
        try:
            f = open(path, errors="replace")  # noqa: SIM115
        except FileNotFoundError:
            typer.echo(f"{name}: no log yet ({path})", err=True)
            return
        with f:
            tail_file(f, lines, follow)
