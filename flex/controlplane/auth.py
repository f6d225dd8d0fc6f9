"""Who is calling: users, their API tokens, runner credentials, join tokens, and the failed-auth limiter.

Secrets are random, prefixed by kind (``flexu_`` user token, ``flexr_`` runner credential, ``flexj_`` join
token), shown once, and stored only as sha256 (they are 256-bit random, so a slow hash buys nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from flex.api import RunnerGrant, Token, TokenCreate, TokenCreated, User, UserCreated
from flex.atomic import write_atomic
from flex.controlplane import audit
from flex.controlplane.db import Database
from flex.controlplane.errors import RateLimited
from flex.controlplane.models import JoinTokenRow, RunnerRow, TokenRow, UserRow
from flex.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated

__all__ = ["CredentialCache", "FailureLimiter", "Principal", "authenticate", "authenticate_cached", "create_join_token",
           "create_token", "create_user", "delete_token", "ensure_admin", "hash_secret", "list_tokens", "list_users",
           "new_secret", "set_groups", "write_secret_file"]

USER_PREFIX, RUNNER_PREFIX, JOIN_PREFIX = "flexu_", "flexr_", "flexj_"
_EXPIRED_RUNNER = "this runner credential has expired (no heartbeat renewed it)"
_EXPIRED_RUNNER_HINT = "ask an admin to rotate it (flex runner rotate), or join the runner again"


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "runner"]
    id: str
    name: str
    admin: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=UTC))


class FailureLimiter:
    """At most ``limit`` failed authentications per client address per minute; then 429 until they age out."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] < now - self.window:
            q.popleft()
        return q

    def check(self, key: str) -> None:
        with self._lock:
            if len(self._recent(key, time.monotonic())) >= self.limit:
                raise RateLimited("too many failed authentications from this address",
                                  hint="wait a minute, then retry with a valid token")

    def failed(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget quiet addresses so the table stays small
                for k in [k for k, q in self._failures.items() if not q]:
                    del self._failures[k]


class CredentialCache:
    """Recently verified credentials, for ``ttl`` seconds: most requests then skip a database read.

    A token deleted through this process is forgotten at once (clear()); through another replica, within
    ``ttl``. Expiry is still checked on every hit."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._hits: dict[str, tuple[Principal, datetime | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> tuple[Principal, datetime | None] | None:
        with self._lock:
            hit = self._hits.get(digest)
        if hit is None or time.monotonic() - hit[2] > self.ttl:
            return None
        return hit[0], hit[1]

    def put(self, digest: str, principal: Principal, expires: datetime | None) -> None:
        with self._lock:
            if len(self._hits) > 50_000:
                self._hits.clear()
            self._hits[digest] = (principal, expires, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


def authenticate_cached(secret: str, cache: CredentialCache) -> Principal | None:
    """The principal of a recently verified secret, without touching the database; None if not cached."""
    hit = cache.get(hash_secret(secret))
    if hit is None:
        return None
    if hit[1] is not None and hit[1] <= datetime.now(UTC):
        if hit[0].kind == "runner":
            raise Unauthenticated(_EXPIRED_RUNNER, hint=_EXPIRED_RUNNER_HINT)
        raise Unauthenticated("this token has expired", hint="create a new token")
    return hit[0]


def authenticate(db: Database, secret: str, cache: CredentialCache | None = None) -> Principal:
    """The principal a bearer secret stands for; Unauthenticated if it stands for none."""
    digest = hash_secret(secret)
    now = datetime.now(UTC)
    if cache is not None and (cached := authenticate_cached(secret, cache)) is not None:
        return cached
    expires: datetime | None = None
    with db.read() as s:
        if secret.startswith(USER_PREFIX):
            row = s.execute(select(TokenRow, UserRow).join(UserRow, TokenRow.user_id == UserRow.id)  # type: ignore[arg-type]
                            .where(TokenRow.hash == digest)).first()
            if row is not None:
                tok, user = row
                expires = _utc(tok.expires_at)
                if expires is not None and expires <= now:
                    raise Unauthenticated("this token has expired", hint="create a new token")
                last = _utc(tok.last_used_at)
                stale = last is None or now - last > timedelta(minutes=1)
                principal = Principal("user", user.id, user.name, user.admin, frozenset(tok.scopes))
            else:
                principal, stale = None, False
        elif secret.startswith(RUNNER_PREFIX):
            runner = s.scalars(select(RunnerRow).where(RunnerRow.credential_hash == digest)).first()
            principal = None if runner is None else Principal("runner", runner.id, runner.name, False,
                                                              frozenset({"read", "write"}))
            if runner is not None:
                expires = _utc(runner.credential_expires_at)
                if expires is not None and expires <= now:
                    raise Unauthenticated(_EXPIRED_RUNNER, hint=_EXPIRED_RUNNER_HINT)
            stale = False
        else:
            principal, stale = None, False
    if principal is None:
        raise Unauthenticated("invalid credentials", hint="log in again: `flex login --server URL`")
    if cache is not None:
        cache.put(digest, principal, expires)
    if stale:  # last-used is informative; write it at most once a minute per token
        with db.write() as s:
            tok_row = s.scalars(select(TokenRow).where(TokenRow.hash == digest)).first()
            if tok_row is not None:
                tok_row.last_used_at = now
    return principal


def write_secret_file(path: Path, secret: str) -> None:
    """Atomically write a secret readable only by its owner (0600): temp file, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, secret + "\n", mode=0o600)


def _token_wire(row: TokenRow) -> Token:
    return Token(id=row.id, name=row.name, scopes=row.scopes, expires_at=_utc(row.expires_at),
                 created_at=_utc(row.created_at), last_used_at=_utc(row.last_used_at))


def _new_token_row(user_id: str, name: str, scopes: list[str], expires_at: datetime | None) -> tuple[TokenRow, str]:
    secret = new_secret(USER_PREFIX)
    row = TokenRow(id="tok_" + uuid.uuid4().hex[:20], user_id=user_id, name=name, hash=hash_secret(secret),
                   scopes=scopes, expires_at=expires_at, created_at=datetime.now(UTC))
    return row, secret


def ensure_admin(db: Database, token_file: Path) -> bool:
    """On first start: create the user ``admin`` and write its token to ``token_file``. True if created."""
    with db.write() as s:
        if s.scalar(select(func.count()).select_from(UserRow)):
            return False
        user = UserRow(id="usr_" + uuid.uuid4().hex[:20], name="admin", admin=True, created_at=datetime.now(UTC))
        s.add(user)
        s.flush()
        tok, secret = _new_token_row(user.id, "first admin token", ["read", "write"], None)
        s.add(tok)
        audit.record(s, "system", "user.create", "user:admin", admin=True)
        # Written before commit: if the write fails nothing is created; if commit fails, the next start retries.
        write_secret_file(token_file, secret)
    return True


def create_user(db: Database, actor: Principal, name: str, admin: bool,
                groups: list[str] | None = None) -> UserCreated:
    try:
        with db.write() as s:
            if s.scalars(select(UserRow).where(UserRow.name == name)).first() is not None:
                raise AlreadyExists(f"user {name!r} already exists")
            user = UserRow(id="usr_" + uuid.uuid4().hex[:20], name=name, admin=admin, created_at=datetime.now(UTC),
                           groups=sorted(set(groups or [])))
            s.add(user)
            s.flush()
            tok, secret = _new_token_row(user.id, "first token", ["read", "write"], None)
            s.add(tok)
            audit.record(s, actor.actor, "user.create", f"user:{name}", admin=admin)
    except IntegrityError as err:
        raise AlreadyExists(f"user {name!r} already exists") from err
    return UserCreated(name=name, token=secret)


def set_groups(db: Database, actor: Principal, name: str, groups: list[str]) -> User:
    """Replace a user's groups; environments waiting for a runner shared with a group are retried by the sweep."""
    with db.write() as s:
        user = s.scalars(select(UserRow).where(UserRow.name == name)).first()
        if user is None:
            raise NotFound(f"user {name!r} not found", hint="`flex user create NAME` makes one")
        user.groups = sorted(set(groups))
        audit.record(s, actor.actor, "user.groups", f"user:{name}", groups=user.groups)
        return User(name=user.name, admin=user.admin, groups=user.groups, created_at=_utc(user.created_at))


def list_users(db: Database) -> list[User]:
    with db.read() as s:
        return [User(name=u.name, admin=u.admin, groups=u.groups, created_at=_utc(u.created_at))
                for u in s.scalars(select(UserRow).order_by(UserRow.name))]


def create_token(db: Database, actor: Principal, body: TokenCreate) -> TokenCreated:
    expires = _utc(body.expires_at)
    if expires is not None and expires <= datetime.now(UTC):
        raise InvalidArgument("expiresAt: is in the past", hint="give a time in the future, or none")
    if not set(body.scopes) <= actor.scopes:
        raise InvalidArgument("scopes: a token cannot have scopes the token creating it lacks")
    with db.write() as s:
        row, secret = _new_token_row(actor.id, body.name, sorted(set(body.scopes)), expires)
        s.add(row)
        audit.record(s, actor.actor, "token.create", f"token:{row.id}", name=body.name, scopes=row.scopes)
        s.flush()
        wire = _token_wire(row)
    return TokenCreated(**wire.model_dump(), token=secret)


def list_tokens(db: Database, actor: Principal) -> list[Token]:
    with db.read() as s:
        rows = s.scalars(select(TokenRow).where(TokenRow.user_id == actor.id).order_by(col(TokenRow.created_at)))
        return [_token_wire(r) for r in rows]


def delete_token(db: Database, actor: Principal, token_id: str) -> None:
    with db.write() as s:
        row = s.get(TokenRow, token_id)
        if row is None or row.user_id != actor.id:
            raise NotFound(f"token {token_id!r} not found")
        s.delete(row)
        audit.record(s, actor.actor, "token.delete", f"token:{token_id}")


def create_join_token(db: Database, actor: Principal, ttl: float,
                      grant: RunnerGrant | None = None) -> tuple[str, datetime, RunnerGrant]:
    """An admin may grant anything; a user only a personal runner of their own (``owner`` = their name)."""
    grant = grant or RunnerGrant()
    if not actor.admin and grant.owner != actor.name:
        raise PermissionDenied("only an admin may make a join token for a shared runner or for someone else",
                               hint=f'to join your own laptop, ask for {{"owner": "{actor.name}"}}')
    secret = new_secret(JOIN_PREFIX)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    with db.write() as s:
        if grant.owner is not None and s.scalars(select(UserRow.id).where(UserRow.name == grant.owner)).first() is None:
            raise InvalidArgument(f"owner: there is no user {grant.owner!r}", hint="create the user first")
        s.add(JoinTokenRow(hash=hash_secret(secret), created_by=actor.name, expires_at=expires,
                           allowance=grant.to_wire()))
        audit.record(s, actor.actor, "runner.join-token.create", "join-token", expires_at=expires.isoformat(),
                     owner=grant.owner, users=grant.users, groups=grant.groups)
    return secret, expires, grant
