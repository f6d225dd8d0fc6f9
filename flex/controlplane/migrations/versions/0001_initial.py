"""Initial schema: users, tokens, join tokens, runners, environments, the watch log, the audit log.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("rv", sa.BigInteger, nullable=False),
        sa.Column("compacted", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO revision (id, rv, compacted) VALUES (1, 0, 0)")
    op.create_table(
        "users",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_users_name", "users", ["name"], unique=True)
    op.create_table(
        "tokens",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("user_id", sa.String, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("hash", sa.String, nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        _ts("expires_at", True),
        _ts("created_at"),
        _ts("last_used_at", True),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_index("ix_tokens_hash", "tokens", ["hash"], unique=True)
    op.create_table(
        "join_tokens",
        sa.Column("hash", sa.String, primary_key=True),
        sa.Column("created_by", sa.String, nullable=False),
        _ts("expires_at"),
        _ts("used_at", True),
        sa.Column("runner_id", sa.String, nullable=True),
    )
    op.create_table(
        "runners",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("disk", sa.BigInteger, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("credential_hash", sa.String, nullable=False),
        _ts("last_heartbeat", True),
        _ts("created_at"),
    )
    op.create_index("ix_runners_name", "runners", ["name"], unique=True)
    op.create_index("ix_runners_credential_hash", "runners", ["credential_hash"], unique=True)
    op.create_table(
        "environments",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("runner_id", sa.String, nullable=True),
        sa.Column("req_cpus", sa.Float, nullable=False),
        sa.Column("req_memory", sa.BigInteger, nullable=False),
        sa.Column("req_disk", sa.BigInteger, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("deletion_timestamp", True),
        sa.UniqueConstraint("owner", "name", name="uq_environments_owner_name"),
    )
    op.create_index("ix_environments_owner", "environments", ["owner"])
    op.create_index("ix_environments_runner_id", "environments", ["runner_id"])
    op.create_table(
        "watch_events",
        sa.Column("rv", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("env_id", sa.String, nullable=False),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("runner_id", sa.String, nullable=True),
        sa.Column("object", sa.Text, nullable=False),
    )
    op.create_index("ix_watch_events_owner_rv", "watch_events", ["owner", "rv"])
    op.create_index("ix_watch_events_runner_rv", "watch_events", ["runner_id", "rv"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _ts("time"),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("resource", sa.String, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_actor", "audit", ["actor"])
    # The audit log is append-only in the database itself, not only by convention.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION flex_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$")
        op.execute("CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION flex_audit_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit "
                       "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")


def downgrade() -> None:
    for table in ("audit", "watch_events", "environments", "runners", "join_tokens", "tokens", "users", "revision"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS flex_audit_append_only()")
