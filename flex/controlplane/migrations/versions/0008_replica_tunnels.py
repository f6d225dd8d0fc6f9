"""Replicas and the runner tunnels each holds (issue 15), so a stream landing on one replica is forwarded to the
replica holding its runner's tunnel.

Revision ID: 0008_replica_tunnels
Only adds its own tables, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_replica_tunnels"
down_revision = "0005_runner_disk_pressure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("url", sa.String, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "runner_tunnels",
        sa.Column("runner_id", sa.String, primary_key=True),
        sa.Column("replica_id", sa.String, nullable=False),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_runner_tunnels_replica_id", "runner_tunnels", ["replica_id"])


def downgrade() -> None:
    op.drop_table("runner_tunnels")
    op.drop_table("replicas")
