"""Backups of deleted environments (issue 17): when a backup expires (backups.expires_at, set as its environment
goes) and which repository holds it (backups.repository: "shared" or "own"), so a backup in the shared one
restores on any runner.

Revision ID: 0010_deleted_backups
Only adds columns, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_deleted_backups"
down_revision = "0009_moves"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("backups", sa.Column("repository", sa.String, nullable=True))
    op.add_column("backups", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_backups_expires_at", "backups", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_backups_expires_at", "backups")
    with op.batch_alter_table("backups") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("repository")
