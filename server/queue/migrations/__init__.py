"""Alembic migrations of the job store (applied by `server.queue.schema.migrate` at start)."""
