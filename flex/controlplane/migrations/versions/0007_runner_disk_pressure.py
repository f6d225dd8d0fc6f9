"""Runners say when their machine is low on free disk (issue 14): the scheduler places nothing new there.

Revision ID: 0005_runner_disk_pressure
Only adds one column, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_runner_disk_pressure"
down_revision = "0006_preview_idle"  # chained after the others when merged
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runners", sa.Column("disk_pressure", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("runners") as batch:
        batch.drop_column("disk_pressure")
