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


def _check_tls(cert: str | None, key: str | None) -> None:
    """Both or neither, and loadable: a bad pair is one line now, not a traceback at the first handshake."""
    import ssl

    from flex.errors import UsageError

    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together", hint="give both, or neither for plain HTTP")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UsageError(f"--tls-cert {cert} / --tls-key {key}: cannot load them: {reason}",
                         hint="a PEM certificate (chain) and its unencrypted PEM private key") from None


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        db: str = typer.Option(None, "--db", help="Database URL (default: SQLite under FLEX_HOME/server/); "
                                                   "postgresql://user@host/db for PostgreSQL."),
        listen: str = typer.Option("127.0.0.1:8080", "--listen", help="HOST:PORT to serve on."),
        heartbeat_timeout: float = typer.Option(None, "--heartbeat-timeout",
                                                help="Seconds without a heartbeat before a runner is offline."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
        tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate (chain): serve HTTPS."),
        tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
        proxy_trusted_origins: str = typer.Option(
            None, "--proxy-trusted-origins",
            help="Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For and "
                 "X-Forwarded-Proto are trusted (default: none)."),
    ) -> None:
        """Run the control plane: REST API, watches, scheduling and auth."""
        import sys

        import uvicorn

        from flex.controlplane.app import create_app
        from flex.controlplane.config import Settings
        from flex.controlplane.db import redact_url

        host, port = _split_listen(listen)
        overrides: dict[str, object] = {"listen": listen}
        if tls_cert is not None or tls_key is not None:
            overrides.update(tls_cert_file=tls_cert, tls_key_file=tls_key)
        if proxy_trusted_origins is not None:
            overrides["proxy_trusted_origins"] = proxy_trusted_origins
        if db:
            overrides["db_url"] = db
        if heartbeat_timeout is not None:
            overrides["heartbeat_timeout"] = heartbeat_timeout
        settings = Settings(**overrides)  # type: ignore[arg-type]
        cert = str(settings.tls_cert_file) if settings.tls_cert_file else None
        key = str(settings.tls_key_file) if settings.tls_key_file else None
        _check_tls(cert, key)
        fastapi_app = create_app(settings)
        if fastapi_app.state.created_admin:
            print(f"created user 'admin'; its token is in {settings.admin_token_file} (mode 0600)", file=sys.stderr)
        url = settings.database_url
        where = redact_url(url) if settings.is_postgres else url.removeprefix("sqlite:///")
        scheme = "https" if cert else "http"
        print(f"flex control plane on {scheme}://{host}:{port} (database: {where})", file=sys.stderr, flush=True)
        # Keep idle connections longer than a load balancer's usual 60 s, so a client reusing one never
        # races the server closing it (uvicorn's default is 5 s).
        # proxy_headers=False: uvicorn would trust X-Forwarded-For from 127.0.0.1 by default; the app's
        # ForwardedHeaders decides instead, from --proxy-trusted-origins only.
        uvicorn.run(fastapi_app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3,
                    timeout_keep_alive=65, access_log=False, proxy_headers=False,
                    ssl_certfile=cert, ssl_keyfile=key)
