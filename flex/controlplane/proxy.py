"""Behind a reverse proxy: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` count only when the peer is a proxy
the operator trusts (``--proxy-trusted-origins``, as Coder names it); from anyone else they are ignored, so
a client cannot pick the address the failed-authentication limiter keys on.

The real client is the rightmost address in ``X-Forwarded-For`` that is not itself a trusted proxy
(each proxy appends the address it was reached from; anything further left is what the client claimed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from flex.errors import InvalidArgument

__all__ = ["ForwardedHeaders", "Network", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str, where: str = "--proxy-trusted-origins") -> list[Network]:
    """``"10.0.0.0/8, 192.0.2.7"`` → networks; a bad entry is one clear error."""
    out: list[Network] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise InvalidArgument(f"{where}: {part!r} is not an IP address or CIDR",
                                  hint="e.g. 10.0.0.0/8,192.0.2.7 (the addresses your proxies connect from)") from None
    return out


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ForwardedHeaders:
    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app, self.trusted = app, list(trusted)

    def _trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return addr is not None and any(addr in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and client and self._trusted(_ip(client[0])):
            hops: list[str] = []
            proto = None
            for key, value in scope["headers"]:
                if key == b"x-forwarded-for":
                    hops += [h for h in value.decode("latin-1").split(",") if h.strip()]
                elif key == b"x-forwarded-proto" and proto is None:
                    proto = value.decode("latin-1").split(",")[0].strip().lower()
            real = None
            for hop in reversed(hops):
                addr = _ip(hop)
                if addr is None:  # garbage: stop at the last address we could vouch for
                    break
                real = str(addr)
                if not self._trusted(addr):
                    break
            if real is not None:
                scope["client"] = (real, 0)
            if proto in ("http", "https"):
                scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        await self.app(scope, receive, send)
