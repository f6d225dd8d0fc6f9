"""`flex server`: run the control plane (FastAPI under uvicorn). Imports stay inside the command so that
`flex --help` never pays for fastapi, sqlalchemy or uvicorn."""

from __future__ import annotations

import typer

__all__ = ["register"]


def _split_listen(listen: str) -> tuple[str, int]:
    from flex.errors import UsageError

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen: {listen!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        db: str = typer.Option(None, "--db", help="Database URL (default: SQLite under FLEX_HOME/server/); "
                                                   "postgresql://user@host/db for PostgreSQL."),
        listen: str = typer.Option("127.0.0.1:8080", "--listen", help="HOST:PORT to serve on."),
        heartbeat_timeout: float = typer.Option(None, "--heartbeat-timeout",
                                                help="Seconds without a heartbeat before a runner is offline."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Run the control plane: REST API, watches, scheduling and auth."""
        import sys

        import uvicorn

        from flex.controlplane.app import create_app
        from flex.controlplane.config import Settings

        host, port = _split_listen(listen)
        overrides: dict[str, object] = {"listen": listen}
        if db:
            overrides["db_url"] = db
        if heartbeat_timeout is not None:
            overrides["heartbeat_timeout"] = heartbeat_timeout
        settings = Settings(**overrides)  # type: ignore[arg-type]
        fastapi_app = create_app(settings)
        if fastapi_app.state.created_admin:
            print(f"created user 'admin'; its token is in {settings.admin_token_file} (mode 0600)", file=sys.stderr)
        where = settings.database_url if settings.is_postgres else settings.database_url.removeprefix("sqlite:///")
        print(f"flex control plane on http://{host}:{port} (database: {where})", file=sys.stderr, flush=True)
        # Keep idle connections longer than a load balancer's usual 60 s, so a client reusing one never
        # races the server closing it (uvicorn's default is 5 s).
        uvicorn.run(fastapi_app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3,
                    timeout_keep_alive=65, access_log=False)
