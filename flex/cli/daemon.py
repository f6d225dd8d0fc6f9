"""`flex daemon start|stop|status|logs|run`: the local daemon behind `flex up` (flex/daemon/)."""

from __future__ import annotations

import typer

__all__ = ["register"]

_LISTEN = typer.Option(None, "--listen", help="Also serve the API and web UI on this loopback HOST:PORT.")


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="daemon", no_args_is_help=True,
                        help="The local daemon: an embedded control plane and runner for `flex up`.")
    app.add_typer(group, name="daemon")

    @group.command("start")
    def start(listen: str = _LISTEN) -> None:
        """Start the daemon in the background (it survives the terminal closing)."""
        import sys

        from flex.daemon import start_daemon
        from flex.daemon.serve import split_listen
        from flex.home import flex_home

        if listen:
            split_listen(listen)
        info, started = start_daemon(flex_home(), listen=listen)
        where = info.socket + (f" and {info.url}" if info.url else "")
        print(f"{'started' if started else 'already running:'} flex daemon (pid {info.pid}) on {where}",
              file=sys.stderr)

    @group.command("stop")
    def stop() -> None:
        """Stop the daemon; environments keep running."""
        import sys

        from flex.daemon import stop_daemon
        from flex.home import flex_home

        info = stop_daemon(flex_home())
        print(f"stopped flex daemon (pid {info.pid}); environments keep running" if info else
              "the flex daemon is not running", file=sys.stderr)

    @group.command("status")
    def status(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """Whether the daemon runs, where it listens, its runner."""
        import json
        import time

        from flex.daemon import DaemonPaths, daemon_info
        from flex.home import flex_home

        home = flex_home()
        info = daemon_info(home)
        data: dict[str, object] = {"running": info is not None, "home": str(home),
                                   "socket": str(DaemonPaths(home).socket), "log": str(DaemonPaths(home).log)}
        if info is not None:
            data.update(pid=info.pid, url=info.url, runnerId=info.runner_id, rootless=info.rootless,
                        startedAt=info.started_at, version=info.version)
        if json_:
            typer.echo(json.dumps(data, indent=2))
            return
        if info is None:
            typer.echo("not running (start it with `flex daemon start`, or just `flex up`)")
            return
        up = int(time.time() - info.started_at)
        typer.echo(f"running: pid {info.pid}, flex {info.version or '(older)'}, up {up}s, "
                   f"{'rootless' if info.rootless else 'root'} runner "
                   f"{info.runner_id}\nsocket: {info.socket}" + (f"\nurl:    {info.url}" if info.url else "")
                   + f"\nlog:    {info.log}")

    @group.command("logs")
    def logs(follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
             tail: int = typer.Option(200, "--tail", "-n", help="Lines from the end (0: all).")) -> None:
        """Print the daemon's log."""

        from flex.cli.tail import tail_file
        from flex.daemon import DaemonPaths
        from flex.errors import NotFound
        from flex.home import flex_home

        path = DaemonPaths(flex_home()).log
        try:
            f = open(path, errors="replace")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist: the daemon never ran here",
                           hint="start it with `flex daemon start`") from None
        with f:
            tail_file(f, tail or None, follow)  # --tail 0: all of it

    @group.command("run")
    def run(listen: str = _LISTEN) -> None:
        """Run the daemon in the foreground (logs on stderr; SIGTERM stops it, environments keep running)."""
        import logging
        import os
        import sys

        from flex.daemon.serve import run_daemon
        from flex.errors import FlexError
        from flex.home import flex_home

        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
        for noisy in ("httpx", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            code = run_daemon(flex_home(), listen)
        except FlexError as err:
            if os.environ.get("FLEX_DAEMON_REPORT_KIND"):
                print(f"kind: {err.kind}", file=sys.stderr)  # `flex daemon start` re-raises the same kind
            raise
        raise typer.Exit(code)
