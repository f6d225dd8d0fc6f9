"""One module per schema revision (alembic), oldest first."""
