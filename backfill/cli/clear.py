"""`backfill clear ID ...`: make matching TIs of a backfill run again (DESIGN section 6).

Invariants:
- the selection is shown first (counts by task and state, then the first
  `SHOWN` TIs); `--dry-run` stops there and writes nothing; otherwise the
  operator confirms (`--yes` skips the question; without a terminal to ask
  on, `--yes` is required: exit 2, nothing written);
- nothing matching -> exit 2, nothing written; so is an unknown backfill,
  a DAG changed since it was planned, a cancelled backfill, a bad regex or
  date;
- no lock is held while the operator reads: the clear is one transaction
  of its own, and a TI that changed meanwhile into a state that cannot be
  cleared (say it was queued) is left alone and counted as not cleared;
- dates without an offset are read in the DAG's timezone, as `run` reads them.
"""

from __future__ import annotations

import collections
import os
import socket
import sys

import click
from sqlalchemy.engine import Engine

from backfill.cli.output import BACKFILL_ID, OutputFormat, emit_json, output_option, warn
from backfill.client.clear import backfill_dag, clear, selection, stalled_warning, targets
from backfill.client.shapes import cleared_json
from backfill.config import Settings
from backfill.errors import UserError
from backfill.planning.run_options import RunOptions
from backfill.store import db
from backfill.store.clear import CLEARABLE, Cleared, Selected
from backfill.store.errors import BackfillNotFound

SHOWN = 20  # TIs listed before asking


@click.command("clear")
@click.argument("backfill_id", metavar="ID", type=BACKFILL_ID)
@click.option("--task-regex", metavar="RE", help="Only tasks whose id matches RE (re.search).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(sorted(s.value for s in CLEARABLE)),
    help="Only TIs in this state; repeat it for several.",
)
@click.option("-s", "--start-date", "start", metavar="DATE", help="Only logical dates from DATE.")
@click.option("-e", "--end-date", "end", metavar="DATE", help="Only logical dates up to DATE.")
@click.option(
    "--map-index",
    "map_indexes",
    type=int,
    multiple=True,
    metavar="N",
    help="Only the TIs of mapped tasks with map index N (repeatable).",
)
@click.option("--downstream", is_flag=True, help="Also their downstream TIs in the same runs.")
@click.option("--dry-run", is_flag=True, help="Only show what would be cleared.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_option
def clear_command(
    *,
    backfill_id: int,
    task_regex: str | None,
    states: tuple[str, ...],
    start: str | None,
    end: str | None,
    map_indexes: tuple[int, ...],
    downstream: bool,
    dry_run: bool,
    yes: bool,
    output: OutputFormat,
) -> None:
    """Make the matching task instances of backfill ID run again, as Airflow's clear does.

    Each keeps its try number and gets its task's retries again; a running one
    is stopped and run again. Their runs and the backfill reopen, and a
    `backfill coordinator` (or `backfill resume ID`) drives them.
    """
    settings = Settings.from_env()
    engine = db.open_engine(settings, create=False)
    if engine is None:
        raise BackfillNotFound(backfill_id)
    try:
        dag, options = backfill_dag(engine, settings, backfill_id)
        asked = selection(
            dag,
            task_regex=task_regex,
            states=states,
            start=start,
            end=end,
            map_indexes=map_indexes,
            downstream=downstream,
        )
        found = targets(engine, backfill_id, dag, asked)
        if output is OutputFormat.TABLE:
            _show(backfill_id, found)
        if not dry_run and not yes:
            _confirm(backfill_id, len(found))
        actor = f"cli:{socket.gethostname()}:{os.getpid()}"  # the journal's record of who
        cleared = None if dry_run else clear(engine, backfill_id, dag, found, actor=actor)
        _report(engine, backfill_id, options=options, found=found, cleared=cleared, output=output)
    finally:
        engine.dispose()


def _show(backfill_id: int, found: list[Selected]) -> None:
    counts = collections.Counter((t.task_id, t.state.value) for t in found)
    noun = "task instance" if len(found) == 1 else "task instances"
    click.echo(f"{len(found)} {noun} of backfill {backfill_id} to clear:")
    for (task_id, state), n in sorted(counts.items()):
        click.echo(f"  {task_id}: {n} {state}")
    for t in found[:SHOWN]:
        task = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
        click.echo(f"    {task} {t.logical_date.isoformat()} {t.state.value} try {t.try_number}")
    if len(found) > SHOWN:
        click.echo(f"    ... and {len(found) - SHOWN} more")


def _confirm(backfill_id: int, n: int) -> None:
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask on: pass --yes to clear, or --dry-run to only look")
    if not click.confirm(f"Clear these {n} and reopen backfill {backfill_id}?", default=False):
        raise UserError("nothing cleared")


def _report(
    engine: Engine,
    backfill_id: int,
    *,
    options: RunOptions,
    found: list[Selected],
    cleared: Cleared | None,
    output: OutputFormat,
) -> None:
    if output is OutputFormat.JSON:
        emit_json(cleared_json(backfill_id, found, cleared))
    elif cleared is None:
        click.echo("dry run: nothing cleared")
    else:
        _say_cleared(backfill_id, len(found), cleared)
    stalled = None if cleared is None else stalled_warning(engine, backfill_id, options)
    if stalled:
        warn(stalled)


def _say_cleared(backfill_id: int, selected: int, cleared: Cleared) -> None:
    line = f"cleared {cleared.task_instances} task instance(s)"
    if cleared.fenced:
        line += f", {cleared.fenced} of them running: their workers stop them"
    if cleared.runs:
        line += f"; {cleared.runs} run(s) reopened"
    click.echo(line)
    if selected > cleared.task_instances:
        click.echo(f"{selected - cleared.task_instances} changed meanwhile and were left alone")
    again = "reopened" if cleared.reopened else "goes on"
    click.echo(
        f"backfill {backfill_id} {again}: a `backfill coordinator` drives it, or run "
        f"`backfill resume {backfill_id}`"
    )
