"""`backfill db ...`: the metadata database.

Invariants:
- `migrate` is idempotent and the only command that changes the schema;
- `clean` deletes only what `store.clean` calls cleanable: ended backfills
  none of whose runs or TIs is still queued or running, children first, a
  bounded transaction at a time; `--dry-run` lists the same selection and
  deletes nothing; a missing embedded database holds nothing to delete and
  is not created.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import pendulum

from backfill.cli.output import OutputFormat, emit_json, iso, output_option, warn, when
from backfill.config import Settings, redact
from backfill.model.dates import parse_cli_date
from backfill.store import clean, db

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


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


@db_group.command("clean")
@click.option(
    "--before",
    "before_text",
    required=True,
    metavar="DATE",
    help="Delete the backfills that ended before DATE (YYYY-MM-DD or ISO 8601; UTC unless "
    "it has an offset).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@output_option
def clean_command(before_text: str, dry_run: bool, output: OutputFormat) -> None:
    """Delete ended backfills that ended before DATE, with their runs, TIs and journals.

    A backfill with a run or a task instance still queued or running is never
    deleted. Each backfill goes in transactions of at most 10,000 rows."""
    before = parse_cli_date(before_text, pendulum.UTC, option="--before")
    as_json = output is OutputFormat.JSON
    engine = db.open_engine(Settings.from_env(), create=False)
    found: list[clean.Cleanable] = []
    done: list[clean.Cleanable] = []
    try:
        if engine is not None:
            with engine.connect() as conn:
                found = clean.cleanable(conn, before)
            for backfill in [] if dry_run else found:
                if _delete(engine, backfill, before):
                    done.append(backfill)
                    if not as_json:
                        click.echo(f"deleted {_describe(backfill)}")
                elif not as_json:
                    why = "it changed meanwhile (reopened, or deleted by another clean)"
                    warn(f"skipped backfill {backfill.id}: {why}")
    finally:
        if engine is not None:
            engine.dispose()
    listed = found if dry_run else done
    if as_json:
        emit_json({"before": iso(before), "dry_run": dry_run, "backfills": _json(listed)})
    elif not found:
        click.echo(f"no backfill ended before {iso(before)}: nothing to delete")
    elif dry_run:
        for backfill in found:
            click.echo(f"would delete {_describe(backfill)}")
        click.echo(f"dry run: nothing deleted; {_total(found)} would be")
    else:
        click.echo(f"deleted {_total(done)} that ended before {iso(before)}")


def _delete(engine: Engine, backfill: clean.Cleanable, before: datetime) -> bool:
    """Delete `backfill` a transaction at a time; False if it stopped being cleanable."""
    while True:
        with engine.begin() as conn:
            step = clean.delete_some(conn, backfill.id, before)
        if step is None:
            return False
        if step.backfill:
            return True


def _describe(backfill: clean.Cleanable) -> str:
    return (
        f"backfill {backfill.id} of {backfill.dag_id} ({backfill.state}, ended "
        f"{when(backfill.ended_at)}): {backfill.runs} runs, "
        f"{backfill.task_instances} task instances"
    )


def _total(backfills: list[clean.Cleanable]) -> str:
    runs = sum(b.runs for b in backfills)
    tis = sum(b.task_instances for b in backfills)
    noun = "backfill" if len(backfills) == 1 else "backfills"
    return f"{len(backfills)} {noun} ({runs} runs, {tis} task instances)"


def _json(backfills: list[clean.Cleanable]) -> list[dict[str, Any]]:
    return [
        {
            "id": b.id,
            "dag_id": b.dag_id,
            "state": b.state,
            "ended_at": iso(b.ended_at),
            "runs": b.runs,
            "task_instances": b.task_instances,
        }
        for b in backfills
    ]
