"""Preview URL credentials (one row per minted preview cookie, kept only as sha256) and a runner's declared
default idle timeout (issue 15).

Revision ID: 0006_preview_idle
Only adds its own table and column, so it can be re-chained after other migrations (another 0005) without
touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_preview_idle"
down_revision = "0005_backups_e17"  # after the backups (both branches began at 0004)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preview_credentials",
        sa.Column("hash", sa.String, primary_key=True),
        sa.Column("user_id", sa.String, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token_id", sa.String, nullable=False),
        sa.Column("env_id", sa.String, nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_preview_credentials_user_id", "preview_credentials", ["user_id"])
    op.create_index("ix_preview_credentials_token_id", "preview_credentials", ["token_id"])
    op.create_index("ix_preview_credentials_env_id", "preview_credentials", ["env_id"])
    op.add_column("runners", sa.Column("idle_timeout", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runners") as batch:
        batch.drop_column("idle_timeout")
    op.drop_table("preview_credentials")
