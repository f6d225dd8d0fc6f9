"""Alembic environment: runs on the connection db.Database.migrate() hands over (never from a config file)."""

from __future__ import annotations

from alembic import context

from flex.controlplane.models import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
