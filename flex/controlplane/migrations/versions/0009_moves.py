"""Moving environments between runners (issue 17.5): the runner that still holds a moving environment's old copy
(environments.move_from, and on each watch event so its watch sees the move), and which backup repository a
runner uses (runners.backup_repository: "shared" or "own").

Revision ID: 0009_moves
Only adds columns, so it can be re-chained after other migrations without touching them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_moves"
down_revision = "0008_replica_tunnels"  # chained after the others when merged
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("environments", sa.Column("move_from", sa.String, nullable=True))
    op.create_index("ix_environments_move_from", "environments", ["move_from"])
    op.add_column("watch_events", sa.Column("move_from", sa.String, nullable=True))
    op.add_column("runners", sa.Column("backup_repository", sa.String, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runners") as batch:
        batch.drop_column("backup_repository")
    with op.batch_alter_table("watch_events") as batch:
        batch.drop_column("move_from")
    op.drop_index("ix_environments_move_from", "environments")
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("move_from")
