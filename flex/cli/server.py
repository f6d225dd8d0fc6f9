"""`flex server`: run the control plane (FastAPI under uvicorn). Imports stay inside the command so that
`flex --help` never pays for fastapi, sqlalchemy or uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from flex.controlplane.config import Settings

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


def _check_port(host: str, port: int) -> None:
    """A port in use is one line now, not an announcement followed by uvicorn's ``[Errno 98]``."""
    import socket

    from flex.errors import Unavailable

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise Unavailable(f"cannot listen on {host}:{port}: {err.strerror}",
                              hint="another program uses that port: stop it, or pick another with "
                                   "--listen HOST:PORT") from None
def _settings(overrides: dict[str, object]) -> Settings:
    """Settings from flags, FLEX_SERVER_* and the TOML file; a bad file or value is one line naming it."""
    import tomllib

    from pydantic import ValidationError

    from flex.controlplane.config import Settings, config_file
    from flex.errors import InvalidConfiguration

    path = config_file()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # (typed fields, from flags)
    except tomllib.TOMLDecodeError as err:
        raise InvalidConfiguration(f"{path}: not valid TOML: {err}", details={"file": str(path)}) from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "?"
        raise InvalidConfiguration(f"server setting {where!r}: {first['msg']}",
                                   hint=f"check {path} and FLEX_SERVER_{where.upper()} (see docs/install.md)",
                                   details={"file": str(path)}) from None


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        db: str = typer.Option(None, "--db", help="Database URL (default: SQLite under FLEX_HOME/server/); "
                                                   "postgresql://user@host/db for PostgreSQL."),
        listen: str = typer.Option(None, "--listen", help="HOST:PORT to serve on (default: the `listen` setting, "
                                                          "127.0.0.1:8080)."),
        heartbeat_timeout: float = typer.Option(None, "--heartbeat-timeout",
                                                help="Seconds without a heartbeat before a runner is offline."),
        advertise_url: str = typer.Option(
            None, "--advertise-url",
            help="URL where the other replicas reach this one (default: from --listen; 0.0.0.0 as 127.0.0.1)."),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
        tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate (chain): serve HTTPS."),
        tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
        proxy_trusted_origins: str = typer.Option(
            None, "--proxy-trusted-origins",
            help="Comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For and "
                 "X-Forwarded-Proto are trusted (default: none)."),
        backup_repository: str = typer.Option(
            None, "--backup-repository",
            help="A backup repository every runner reaches (a directory, or s3:http[s]://HOST/BUCKET[/PREFIX]); "
                 "runners back up into it, and environments can move between them (docs/backup.md)."),
        deleted_backup_retention: str = typer.Option(
            None, "--deleted-backup-retention",
            help="How long a deleted environment's last backup stays restorable (seconds, or 12h, 7d; default "
                 "7d; 0: no backup on delete)."),
    ) -> None:
        """Run the control plane: REST API, watches, scheduling and auth."""
        import sys

        from flex.controlplane.app import create_app
        from flex.controlplane.db import redact_url
        from flex.controlplane.serving import serve

        overrides: dict[str, object] = {}
        if listen is not None:
            overrides["listen"] = listen
        if tls_cert is not None or tls_key is not None:
            overrides.update(tls_cert_file=tls_cert, tls_key_file=tls_key)
        if proxy_trusted_origins is not None:
            overrides["proxy_trusted_origins"] = proxy_trusted_origins
        if db:
            overrides["db_url"] = db
        if heartbeat_timeout is not None:
            overrides["heartbeat_timeout"] = heartbeat_timeout
        if backup_repository is not None:
            overrides["backup_repository"] = backup_repository
        if deleted_backup_retention is not None:
            overrides["deleted_backup_retention"] = deleted_backup_retention
        if advertise_url is not None:
            overrides["advertise_url"] = advertise_url
        settings = _settings(overrides)
        host, port = _split_listen(settings.listen)
        cert = str(settings.tls_cert_file) if settings.tls_cert_file else None
        key = str(settings.tls_key_file) if settings.tls_key_file else None
        _check_tls(cert, key)
        _check_port(host, port)
        fastapi_app = create_app(settings)
        if fastapi_app.state.created_admin:
            print(f"created user 'admin'; its token is in {settings.admin_token_file} (mode 0600)", file=sys.stderr)
        url = settings.database_url
        where = redact_url(url) if settings.is_postgres else url.removeprefix("sqlite:///")
        scheme = "https" if cert else "http"
        print(f"flex control plane on {scheme}://{host}:{port} (database: {where})", file=sys.stderr, flush=True)
        # Keep idle connections longer than a load balancer's usual 60 s, so a client reusing one never
        # races the server closing it (uvicorn's default is 5 s).
        # ws_per_message_deflate=False: the tunnel and port streams carry bytes that are often compressed
        # already, and deflating each message costs more CPU than the loopback or LAN saves.
        # proxy_headers=False: uvicorn would trust X-Forwarded-For from 127.0.0.1 by default; the app's
        # ForwardedHeaders decides instead, from --proxy-trusted-origins only.
        started = serve(fastapi_app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3,
                        timeout_keep_alive=65, access_log=False, proxy_headers=False,
                        ssl_certfile=cert, ssl_keyfile=key, ws_per_message_deflate=False)
        if not started:
            sys.exit(3)  # what uvicorn.run exits with when the server never started
