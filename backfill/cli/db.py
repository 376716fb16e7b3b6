"""`backfill db ...`: the metadata database."""

from __future__ import annotations

import click

from backfill.config import Settings, redact
from backfill.store import db


@click.group("db")
def db_group() -> None:
    """The metadata database (BACKFILL_DATABASE_URL)."""


@db_group.command("migrate")
def migrate_command() -> None:
    """Create the schema, or upgrade it to this version's revision. Idempotent."""
    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):
        # The embedded database: open_engine creates its folder and migrates it.
        engine = db.open_engine(settings, create=True)
        assert engine is not None  # create=True always gives an engine
    else:
        engine = db.create_engine_for(settings.database_url)
    try:
        db.migrate(engine)
        revision = db.schema_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"database {redact(settings.database_url)} is at revision {revision} (head)")
