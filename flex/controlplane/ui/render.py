"""Templates (Jinja2, autoescaped: everything user-supplied is text, never markup) and the filters they use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["STATIC", "age", "human_bytes", "page", "safe_url", "templates"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
HTMX = "htmx-2.0.11.min.js"
XTERM = "xterm-6.0.0.min.js"  # @xterm/xterm 6.0.0 and @xterm/addon-fit 0.11.0 from the npm registry (docs/ui.md)
XTERM_CSS = "xterm-6.0.0.css"
XTERM_FIT = "xterm-addon-fit-0.11.0.min.js"


def age(value: Any, now: datetime | None = None) -> str:
    """'3m', '5h', '2d': how long ago, as dashboards show it."""
    if not value:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    secs = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def human_bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"


def safe_url(url: Any) -> str | None:
    """A link only for http(s): a runner-reported URL must not become javascript: or data: in our page."""
    if not isinstance(url, str):
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.filters.update(age=age, bytes=human_bytes, safe_url=safe_url)
templates.globals.update(htmx=HTMX, xterm=XTERM, xterm_css=XTERM_CSS, xterm_fit=XTERM_FIT)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "ui_session", None)
    ctx = {"who": session.who if session else None, "csrf": session.csrf if session else "",
           "path": request.url.path, **context}
    return HTMLResponse(templates.get_template(name).render(ctx), status_code=status_code)
