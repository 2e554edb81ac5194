"""Alembic migrations of the platform store; `Store.migrate()` applies them. Add a file in `versions/` per change."""
