"""The web UI the control plane serves at ``/`` (issue 18): server-rendered Jinja2 pages, htmx for small
updates, live status from the same watch stream the API serves, and the same Store and auth calls the API
routes make. Imports controlplane and api only; the front-end libraries are static files shipped here.

Other routes that accept the browser's session (e.g. WebSockets) call :func:`session_user`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from flex.controlplane.ui.headers import SecurityHeaders
from flex.controlplane.ui.sessions import COOKIE, session_user

__all__ = ["COOKIE", "install", "session_user"]


def install(app: FastAPI) -> None:
    """Add the UI's routes, its static files under /static, and its security headers to ``app``."""
    from flex.controlplane.ui import admin, backups, environments, logs, signin, tokens
    from flex.controlplane.ui.render import STATIC

    for module in (signin, backups, environments, logs, tokens, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityHeaders)
