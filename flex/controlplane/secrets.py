"""Users' secrets: set (create or replace), list (names and scopes only), delete, and the one read that
returns values: the secrets of an environment, for the runner that environment is bound to.

Values are sealed with the server's key before they reach the database and opened only in
``for_runner``; they never enter the watch log, the audit log, an error message or a log line.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlmodel import col, select

from flex.api import RunnerSecret, RunnerSecrets, Secret, SecretPut
from flex.api.secrets import secret_applies
from flex.controlplane import audit
from flex.controlplane.auth import Principal
from flex.controlplane.db import Database
from flex.controlplane.models import SecretRow
from flex.controlplane.secret_key import SecretKey
from flex.controlplane.store import Store, utc
from flex.errors import NotFound, PermissionDenied

__all__ = ["Secrets"]


def _wire(row: SecretRow) -> Secret:
    return Secret(name=row.name, environments=row.environments, created_at=utc(row.created_at),
                  updated_at=utc(row.updated_at))


def _context(owner: str, name: str) -> str:
    return f"{owner}/{name}"


class Secrets:
    def __init__(self, db: Database, key: SecretKey) -> None:
        self.db, self.key = db, key

    def put(self, who: Principal, name: str, body: SecretPut) -> tuple[Secret, bool]:
        """Create or replace ``name``; True if it was created."""
        now = datetime.now(UTC)
        sealed = self.key.seal(body.value.get_secret_value(), _context(who.name, name))
        with self.db.write() as s:
            row = s.scalars(select(SecretRow).where(SecretRow.owner == who.name, SecretRow.name == name)).first()
            created = row is None
            if row is None:
                row = SecretRow(id="sec_" + uuid.uuid4().hex[:20], owner=who.name, name=name, created_at=now,
                                environments=[], key_id="", ciphertext="", updated_at=now)
                s.add(row)
            row.environments, row.key_id, row.ciphertext, row.updated_at = body.environments, self.key.id, sealed, now
            audit.record(s, who.actor, "secret.create" if created else "secret.update",
                         f"secret:{who.name}/{name}", environments=body.environments)
            s.flush()
            return _wire(row), created

    def list(self, who: Principal) -> list[Secret]:
        with self.db.read() as s:
            rows = s.scalars(select(SecretRow).where(SecretRow.owner == who.name).order_by(col(SecretRow.name)))
            return [_wire(r) for r in rows]

    def delete(self, who: Principal, name: str) -> None:
        with self.db.write() as s:
            row = s.scalars(select(SecretRow).where(SecretRow.owner == who.name, SecretRow.name == name)).first()
            if row is None:
                raise NotFound(f"secret {name!r} not found", hint="list yours with `flex secret ls`")
            s.delete(row)
            audit.record(s, who.actor, "secret.delete", f"secret:{who.name}/{name}")

    def for_runner(self, who: Principal, env_id: str) -> RunnerSecrets:
        """The values an environment gets; only the runner it is bound to may read them (others: 404)."""
        if who.kind != "runner":
            raise PermissionDenied("only the runner an environment is bound to may read its secrets")
        with self.db.read() as s:
            env = Store.find(s, who, env_id)
            rows = list(s.scalars(select(SecretRow).where(SecretRow.owner == env.owner)
                                  .order_by(col(SecretRow.name))))
        items = [RunnerSecret(name=r.name, value=self.key.open(r.ciphertext, _context(r.owner, r.name), r.key_id))
                 for r in rows if secret_applies(r.environments, env.name)]
        return RunnerSecrets(items=items)
