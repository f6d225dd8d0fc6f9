"""Preview cookies: a short-lived credential for one user, one environment and one port (issue 15).

Minted from a signed-in web UI session, so the browser never carries the user's API token; the cookie holds
256 random bits, the database only their sha256. A credential ends at ``expires_at`` (at most the session's
own end), or as soon as the API token behind the session is revoked or expires.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlmodel import col, delete, select

from flex.controlplane.auth import Principal, hash_secret
from flex.controlplane.db import Database
from flex.controlplane.models import PreviewCredentialRow, TokenRow, UiSessionRow, UserRow

__all__ = ["COOKIE", "lookup_preview", "mint_preview"]

COOKIE = "flex_preview"  # Path=/p/{owner}/{env}/{port}/, HttpOnly, SameSite=Lax; Secure over https


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def mint_preview(db: Database, session_cookie: str, env_id: str, port: int, ttl: float) -> tuple[str, datetime]:
    """(cookie value, expiry) for the user of the UI session ``session_cookie`` (already checked live)."""
    cookie = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db.write() as s:
        session = s.get(UiSessionRow, hash_secret(session_cookie))
        if session is None:
            raise LookupError("the web UI session ended")
        expires = min(now + timedelta(seconds=ttl), _utc(session.expires_at))
        s.add(PreviewCredentialRow(hash=hash_secret(cookie), user_id=session.user_id, token_id=session.token_id,
                                   env_id=env_id, port=port, created_at=now, expires_at=expires))
        s.execute(delete(PreviewCredentialRow).where(col(PreviewCredentialRow.expires_at) < now))
    return cookie, expires


def lookup_preview(db: Database, cookie: str, env_id: str, port: int) -> Principal | None:
    """The user this cookie stands for on ``env_id``'s ``port``, or None (unknown, expired, another
    environment or port, or its token revoked)."""
    now = datetime.now(UTC)
    with db.read() as s:
        hit = s.execute(select(PreviewCredentialRow, TokenRow, UserRow)
                        .join(TokenRow, col(TokenRow.id) == col(PreviewCredentialRow.token_id))
                        .join(UserRow, col(UserRow.id) == col(PreviewCredentialRow.user_id))
                        .where(PreviewCredentialRow.hash == hash_secret(cookie))).first()
    if hit is None:
        return None
    row, tok, user = hit
    if row.env_id != env_id or row.port != port or _utc(row.expires_at) <= now:
        return None
    if tok.expires_at is not None and _utc(tok.expires_at) <= now:
        return None
    return Principal("user", user.id, user.name, user.admin, frozenset(tok.scopes))
