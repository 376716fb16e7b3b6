"""Alembic environment, driven only from `backfill.store.db` (there is no alembic.ini).

`backfill.store.db.migrate` passes an open connection, inside the transaction it
owns, in `config.attributes["connection"]`; this file never builds an engine
of its own and never configures logging. `backfill.store.schema.metadata` is the
target of autogenerate, so a new revision can be drafted with
`alembic.command.revision(backfill.store.db.alembic_config(conn), autogenerate=True)`.
"""

from alembic import context

from backfill.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through backfill.store.db.migrate (no engine is configured here)"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    compare_server_default=True,
)
with context.begin_transaction():
    context.run_migrations()
