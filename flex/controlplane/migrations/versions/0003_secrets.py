"""Secrets: a user's write-only environment variables, stored encrypted (issue 12, point 3).

Revision ID: 0003_secrets
Only adds its own table, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_secrets"
down_revision = "0002_tenancy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("environments", sa.JSON, nullable=False),
        sa.Column("key_id", sa.String, nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_secrets_owner_name"),
    )
    op.create_index("ix_secrets_owner", "secrets", ["owner"])


def downgrade() -> None:
    op.drop_table("secrets")
