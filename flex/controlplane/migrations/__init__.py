"""Alembic migrations of the control-plane schema, shipped in the package and run by Database.migrate()."""
