"""Web UI sessions: a token exchanged once for a cookie naming a server-side session record.

The cookie holds 256 random bits; the database only their sha256 (a stolen backup opens no browser). A session
ends at its absolute expiry, after ``ui_session_idle`` without use, at sign-out, or as soon as the API token it
was opened with is revoked or expires: it acts with that token's user and scopes, never more.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import col, delete, select
from starlette.requests import HTTPConnection

from flex.controlplane import audit
from flex.controlplane.auth import Principal, authenticate, hash_secret
from flex.controlplane.db import Database
from flex.controlplane.models import TokenRow, UiSessionRow, UserRow
from flex.errors import PermissionDenied

__all__ = ["COOKIE", "UiSession", "close_all_sessions", "close_session", "count_sessions", "current", "lookup",
           "open_session", "session_user"]

COOKIE = "flex_session"  # HttpOnly, SameSite=Strict, Path=/; Secure when served over https
_TOUCH_EVERY = timedelta(minutes=1)  # last-seen is written at most this often per session


@dataclass(frozen=True)
class UiSession:
    who: Principal
    csrf: str  # the synchronizer token every state-changing form and request must carry
    expires_at: datetime


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def open_session(db: Database, token: str, ttl: float) -> tuple[str, UiSession]:
    """Sign in with a user's API token: (the cookie value, the session). Unauthenticated for a bad token."""
    who = authenticate(db, token)
    if who.kind != "user":
        raise PermissionDenied("a runner credential cannot sign in to the web UI", hint="use a user token (flexu_...)")
    cookie = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db.write() as s:
        tok = s.scalars(select(TokenRow).where(TokenRow.hash == hash_secret(token))).one()
        expires = now + timedelta(seconds=ttl)
        if tok.expires_at is not None:
            expires = min(expires, _utc(tok.expires_at))
        row = UiSessionRow(hash=hash_secret(cookie), user_id=who.id, token_id=tok.id, csrf=secrets.token_urlsafe(32),
                           created_at=now, expires_at=expires, last_seen_at=now)
        s.add(row)
        s.execute(delete(UiSessionRow).where(col(UiSessionRow.expires_at) < now))  # forget ended ones as we go
        audit.record(s, who.actor, "ui.signin", f"token:{tok.id}")
    return cookie, UiSession(who, row.csrf, expires)


def lookup(db: Database, cookie: str, idle: float) -> UiSession | None:
    """The live session this cookie names, or None (unknown, expired, idle too long, or its token revoked)."""
    digest = hash_secret(cookie)
    now = datetime.now(UTC)
    with db.read() as s:
        hit = s.execute(select(UiSessionRow, TokenRow, UserRow)
                        .join(TokenRow, col(TokenRow.id) == col(UiSessionRow.token_id))
                        .join(UserRow, col(UserRow.id) == col(UiSessionRow.user_id))
                        .where(UiSessionRow.hash == digest)).first()
        if hit is None:
            return None
        row, tok, user = hit
        if _utc(row.expires_at) <= now or now - _utc(row.last_seen_at) > timedelta(seconds=idle):
            return None
        if tok.expires_at is not None and _utc(tok.expires_at) <= now:
            return None
        session = UiSession(Principal("user", user.id, user.name, user.admin, frozenset(tok.scopes)), row.csrf,
                            _utc(row.expires_at))
        stale = now - _utc(row.last_seen_at) > _TOUCH_EVERY
    if stale:
        with db.write() as s:
            fresh = s.get(UiSessionRow, digest)
            if fresh is not None:
                fresh.last_seen_at = now
    return session


def close_session(db: Database, cookie: str) -> None:
    """Sign out: the record goes, so the cookie is worthless even if it was copied."""
    with db.write() as s:
        row = s.get(UiSessionRow, hash_secret(cookie))
        if row is not None:
            user = s.get(UserRow, row.user_id)
            s.delete(row)
            audit.record(s, f"user:{user.name if user else row.user_id}", "ui.signout", f"token:{row.token_id}")


def close_all_sessions(db: Database, who: Principal) -> int:
    """Sign out everywhere: every browser session of this user ends (how many did)."""
    with db.write() as s:
        gone = len(list(s.scalars(select(UiSessionRow.hash).where(UiSessionRow.user_id == who.id))))
        s.execute(delete(UiSessionRow).where(col(UiSessionRow.user_id) == who.id))
        audit.record(s, who.actor, "ui.signout-everywhere", f"user:{who.name}", sessions=gone)
    return gone


def count_sessions(db: Database, who: Principal) -> int:
    now = datetime.now(UTC)
    with db.read() as s:
        return len(list(s.scalars(select(UiSessionRow.hash).where(UiSessionRow.user_id == who.id,
                                                                  col(UiSessionRow.expires_at) > now))))


async def current(conn: HTTPConnection) -> UiSession | None:
    cookie = conn.cookies.get(COOKIE)
    if not cookie or len(cookie) > 100:
        return None
    cp = conn.app.state.cp
    return await asyncio.to_thread(lookup, cp.db, cookie, cp.settings.ui_session_idle)


async def session_user(conn: HTTPConnection) -> Principal | None:
    """Who the browser making this request (or opening this WebSocket) is signed in as, or None.

    For other routes that accept the UI's cookie (e.g. browser WebSockets): the Principal has the user's
    name, admin flag and the scopes of the token the session was opened with. A WebSocket handler must also
    check that the Origin header is this server's (see csrf.same_origin): cookies ride along cross-site."""
    session = await current(conn)
    return None if session is None else session.who
