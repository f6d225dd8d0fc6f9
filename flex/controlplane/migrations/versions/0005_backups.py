"""Backups of environments as API resources (issue 17).

Revision ID: 0005_backups_e17
Only adds its own table, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_backups_e17"
down_revision = "0004_ui_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("env_id", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("environment", sa.String, nullable=False),
        sa.Column("runner_id", sa.String, nullable=True),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("reason", sa.String, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("snapshot", sa.String, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_backups_env_id", "backups", ["env_id"])
    op.create_index("ix_backups_owner_environment", "backups", ["owner", "environment"])


def downgrade() -> None:
    op.drop_table("backups")
