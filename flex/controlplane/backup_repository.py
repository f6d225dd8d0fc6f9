"""The installation's shared backup repository (issue 17.5): its location is a setting, its password a 0600 file
in the server's directory (made once, like the secret key), and both go only to runners, over their credential
(``GET /api/v1/runners/{id}/backup-repository``): never into a spec, a status, a watch event or a log line."""

from __future__ import annotations

import secrets

from flex.api import BackupRepository
from flex.atomic import write_atomic
from flex.controlplane.config import Settings
from flex.errors import FailedPrecondition

__all__ = ["ensure_password", "shared_repository"]


def ensure_password(settings: Settings) -> None:
    """Make the password file on first use (owner-only); refuse one others may read."""
    if not settings.backup_repository:
        return
    path = settings.backup_repository_key
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    if path.stat().st_mode & 0o077:
        raise FailedPrecondition(f"{path} is readable by others: it holds the backup repository's password",
                                 hint=f"chmod 600 {path}")


def shared_repository(settings: Settings) -> BackupRepository | None:
    if not settings.backup_repository:
        return None
    ensure_password(settings)
    env = {}
    if settings.backup_repository_access_key:
        env = {"AWS_ACCESS_KEY_ID": settings.backup_repository_access_key,
               "AWS_SECRET_ACCESS_KEY": settings.backup_repository_secret_key}
    return BackupRepository(location=settings.backup_repository,
                            password=settings.backup_repository_key.read_text().strip(), env=env)
