"""Alembic's environment for the job store: runs on the connection `server.queue.schema.migrate` hands it.

There is no alembic.ini: the server applies migrations itself at start (under a lock). For
`alembic revision` during development see ARCHITECTURE.md ("A schema change").
"""

from alembic import context

from server.queue.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use (autogenerate): connect to the URL it was given
    from sqlalchemy import create_engine  # deferred: only the developer CLI path needs a new engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
