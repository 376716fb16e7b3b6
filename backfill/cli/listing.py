"""`backfill list`: every backfill, newest first, with its progress.

Invariants:
- read only, from one consistent snapshot; a missing embedded database
  simply holds no backfills;
- bounded: a table shows the newest `LIST_PAGE` unless --limit says
  otherwise and says which rows it showed; progress is counted for the
  backfills shown only. JSON lists every backfill.
"""

from __future__ import annotations

import click
from rich.table import Table

from backfill.cli.output import OutputFormat, console, emit_json, output_option, table, when
from backfill.cli.paging import page_limit, paging_options, showing
from backfill.client.listing import listing
from backfill.config import Settings
from backfill.model.states import BackfillState
from backfill.store import status
from backfill.store.status import Listed

LIST_PAGE = 50  # backfills a `list` table shows unless --limit says otherwise


@click.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in BackfillState]),
    help="Only backfills in this state.",
)
@paging_options("backfills", defaults=f"{LIST_PAGE} in a table, all in JSON")
@output_option
def list_command(state: str | None, limit: int | None, offset: int, output: OutputFormat) -> None:
    """Every backfill, newest first, with its progress.

    Progress is counted for the backfills shown only: a table shows the newest
    50 unless --limit says otherwise; JSON lists every backfill."""
    wanted = None if state is None else BackfillState(state)
    as_table = output is OutputFormat.TABLE
    page = page_limit(limit, LIST_PAGE if as_table else None)
    with status.reading(Settings.from_env()) as conn:
        if not as_table:
            emit_json([] if conn is None else listing(conn, wanted, limit=page, offset=offset))
            return
        if conn is None:
            rows, total = [], 0
        else:
            rows = status.list_backfills(conn, wanted, limit=page, offset=offset)
            total = status.count_backfills(conn, wanted)
    if total == 0:
        click.echo("no backfills yet" if state is None else f"no {state} backfills")
        return
    if rows:
        console().print(_listed_table(rows))
    if offset > 0 or len(rows) < total:
        hint = "--offset/--limit (--limit 0: all), --state"
        click.echo(showing("backfills", offset, len(rows), total, hint))


def _listed_table(rows: list[Listed]) -> Table:
    tbl = table("id", "dag_id", "state", "start", "end", "runs done", "TIs done", "created")
    for row in rows:
        tbl.add_row(
            str(row.id),
            row.dag_id,
            row.state.value,
            when(row.start),
            when(row.end),
            f"{row.runs_finished}/{row.runs_total}",
            f"{row.task_instances_finished}/{row.task_instances_total}",
            when(row.created_at),
        )
    return tbl
