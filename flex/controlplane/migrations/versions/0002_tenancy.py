"""Tenancy: runner owners, grants, cordon, rootless id ranges and credential expiry; user groups; the policy.

Revision ID: 0002_tenancy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_tenancy"
down_revision = "0001"  # 0001_initial.py says revision "0001"
branch_labels = None
depends_on = None


def _json(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.JSON, nullable=False, server_default=sa.text("'{}'"))


def upgrade() -> None:
    op.add_column("users", sa.Column("groups", sa.JSON, nullable=False, server_default=sa.text("'[]'")))
    op.add_column("join_tokens", _json("allowance"))
    op.add_column("runners", sa.Column("owner", sa.String, nullable=True))
    op.add_column("runners", _json("allowance"))
    op.add_column("runners", sa.Column("cordoned", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("runners", sa.Column("rootless", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("runners", sa.Column("id_ranges", sa.Integer, nullable=False, server_default="0"))
    op.add_column("runners", sa.Column("credential_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_runners_owner", "runners", ["owner"])
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy")
    op.drop_index("ix_runners_owner", "runners")
    with op.batch_alter_table("runners") as batch:
        for column in ("credential_expires_at", "id_ranges", "rootless", "cordoned", "allowance", "owner"):
            batch.drop_column(column)
    with op.batch_alter_table("join_tokens") as batch:
        batch.drop_column("allowance")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("groups")
