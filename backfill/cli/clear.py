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
import re
import socket
import sys
from typing import Any

import click
import pendulum
from sqlalchemy.engine import Engine

from backfill.cli.output import BACKFILL_ID, OutputFormat, emit_json, output_option, warn
from backfill.config import Settings
from backfill.engine import clear as engine_clear
from backfill.engine.clear import Selection
from backfill.errors import UserError
from backfill.model.dag import DAG
from backfill.model.dates import parse_cli_date
from backfill.model.discovery import load_dags
from backfill.model.states import TIState
from backfill.planning.run_options import FailurePolicy, RunOptions
from backfill.store import db, pass_reads, reads, status
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
        dag, options = _backfill(engine, settings, backfill_id)
        asked = Selection(
            task_ids=_tasks_matching(dag, task_regex),
            states=[TIState(s) for s in states] or None,
            start=None if start is None else parse_cli_date(start, dag.timezone, option="-s"),
            end=None if end is None else parse_cli_date(end, dag.timezone, option="-e"),
            downstream=downstream,
        )
        targets = _targets(engine, backfill_id, dag, asked)
        if output is OutputFormat.TABLE:
            _show(backfill_id, targets)
        if not dry_run and not yes:
            _confirm(backfill_id, len(targets))
        cleared = None if dry_run else _clear(engine, backfill_id, dag, targets)
        _report(
            engine, backfill_id, options=options, targets=targets, cleared=cleared, output=output
        )
    finally:
        engine.dispose()


def _backfill(engine: Engine, settings: Settings, backfill_id: int) -> tuple[DAG, RunOptions]:
    """The backfill's DAG, from the DAGs folder, and its options."""
    with reads.reading(engine) as conn:
        found = status.summary(conn, backfill_id)
    if found is None:
        raise BackfillNotFound(backfill_id)
    return load_dags(settings.dags_folder).get(found.dag_id), RunOptions.from_json(found.options)


def _targets(engine: Engine, backfill_id: int, dag: DAG, asked: Selection) -> list[Selected]:
    """The TIs to clear; nothing matching is bad input. Read only: nothing is written."""
    with engine.begin() as conn:
        engine_clear.check_dag(conn, backfill_id, dag)
        targets = engine_clear.select(conn, backfill_id, dag, asked)
    if not targets:
        clearable = ", ".join(sorted(s.value for s in CLEARABLE))
        raise UserError(
            f"no task instance of backfill {backfill_id} matches (clearable states: "
            f"{clearable}); see `backfill tasks {backfill_id}`"
        )
    return targets


def _tasks_matching(dag: DAG, regex: str | None) -> list[str] | None:
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise UserError(f"--task-regex: {regex!r} is not a regular expression: {exc}") from None
    matching = [tid for tid in dag.tasks if pattern.search(tid)]
    if not matching:
        raise UserError(
            f"--task-regex {regex!r} matches no task of DAG {dag.dag_id!r} "
            f"(its tasks: {', '.join(sorted(dag.tasks))})"
        )
    return matching


def _show(backfill_id: int, targets: list[Selected]) -> None:
    counts = collections.Counter((t.task_id, t.state.value) for t in targets)
    noun = "task instance" if len(targets) == 1 else "task instances"
    click.echo(f"{len(targets)} {noun} of backfill {backfill_id} to clear:")
    for (task_id, state), n in sorted(counts.items()):
        click.echo(f"  {task_id}: {n} {state}")
    for t in targets[:SHOWN]:
        click.echo(
            f"    {t.task_id} {t.logical_date.isoformat()} {t.state.value} try {t.try_number}"
        )
    if len(targets) > SHOWN:
        click.echo(f"    ... and {len(targets) - SHOWN} more")


def _confirm(backfill_id: int, n: int) -> None:
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask on: pass --yes to clear, or --dry-run to only look")
    if not click.confirm(f"Clear these {n} and reopen backfill {backfill_id}?", default=False):
        raise UserError("nothing cleared")


def _clear(engine: Engine, backfill_id: int, dag: DAG, targets: list[Selected]) -> Cleared:
    actor = f"cli:{socket.gethostname()}:{os.getpid()}"  # the journal's record of who
    with engine.begin() as conn:
        return engine_clear.clear(
            conn, backfill_id, dag, targets, actor=actor, now=pendulum.now("UTC")
        )


def _report(
    engine: Engine,
    backfill_id: int,
    *,
    options: RunOptions,
    targets: list[Selected],
    cleared: Cleared | None,
    output: OutputFormat,
) -> None:
    if output is OutputFormat.JSON:
        emit_json(_as_json(backfill_id, targets, cleared))
    elif cleared is None:
        click.echo("dry run: nothing cleared")
    else:
        _say_cleared(backfill_id, len(targets), cleared)
    if cleared is None or options.on_failure is not FailurePolicy.STOP:
        return
    with reads.reading(engine) as conn:
        failures_left = pass_reads.has_failures(conn, backfill_id)
    if failures_left:
        warn(
            f"backfill {backfill_id} stops on failure and still has failed task instances: "
            "runs it has not started yet will not start; clear those too to run everything"
        )


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


def _as_json(backfill_id: int, targets: list[Selected], cleared: Cleared | None) -> dict[str, Any]:
    return {
        "backfill_id": backfill_id,
        "dry_run": cleared is None,
        "selected": [
            {
                "task_id": t.task_id,
                "logical_date": t.logical_date.isoformat(),
                "state": t.state.value,
                "try_number": t.try_number,
            }
            for t in targets
        ],
        "cleared": None if cleared is None else cleared.task_instances,
        "fenced": None if cleared is None else cleared.fenced,
        "runs_reopened": None if cleared is None else cleared.runs,
        "backfill_reopened": None if cleared is None else cleared.reopened,
    }
