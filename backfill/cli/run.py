"""`backfill run DAG_ID -s START -e END [options]` and `backfill create ...`.

Every input is validated before anything is written: the options, the DAG,
the range, the options against the DAG (`--task-regex` selects a task,
`--run-backwards` without depends_on_past), then, read from the database,
the pools the backfill needs; bad input exits 2 having written nothing.
The plan is made by reading only: an embedded database that does not exist
yet means "no existing runs, only `default_pool`" and is not created. The
dry run prints that plan; otherwise the backfill is created in one
transaction (`backfill.engine.create`; a run created meanwhile is a conflict), and
`run` drives it here to its end (`backfill.cli.drive`), `create` leaves it
to a `backfill coordinator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import pendulum

from backfill.cli.drive import drive_foreground, local_workers_option
from backfill.cli.metrics_flags import MetricsAddress, metrics_options, serving_metrics
from backfill.cli.output import OutputFormat, emit_json, output_option
from backfill.cli.plan_view import count, plan_json, print_plan
from backfill.cli.run_flags import run_options
from backfill.config import Settings
from backfill.engine.create import create_backfill
from backfill.engine.dispatch import check_broker
from backfill.model.dag import DAG
from backfill.model.dates import parse_cli_date
from backfill.model.discovery import load_dags
from backfill.model.schedule import DataInterval
from backfill.model.task_options import DEFAULT_POOL
from backfill.planning.backfill_plan import (
    BackfillPlan,
    check_options,
    expand_range,
    plan_backfill,
    refuse_missing_pools,
)
from backfill.planning.run_options import RunOptions
from backfill.store import db, pools, reads

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine


def resolve_range(dag: DAG, start: str, end: str) -> list[DataInterval]:
    """The DAG's intervals in [START, END], dates without offset read in the DAG's timezone."""
    first = parse_cli_date(start, dag.timezone, option="--start-date")
    last = parse_cli_date(end, dag.timezone, option="--end-date")
    return expand_range(dag, first, last)


def backfill_arguments(fn: Callable[..., Any]) -> Callable[..., Any]:
    """DAG_ID, -s, -e, the run options and --dry-run: what `run` and `create` share."""
    decorators = (
        click.argument("dag_id"),
        click.option(
            "-s",
            "--start-date",
            "start",
            required=True,
            metavar="DATE",
            help="First date (YYYY-MM-DD or ISO 8601).",
        ),
        click.option(
            "-e", "--end-date", "end", required=True, metavar="DATE", help="Last date, inclusive."
        ),
        run_options,
        click.option("--dry-run", is_flag=True, help="Print the plan; write nothing."),
    )
    for decorate in reversed(decorators):
        fn = decorate(fn)
    return fn


@click.command("run")
@backfill_arguments
@local_workers_option
@metrics_options
@output_option
def run_command(
    *,
    dag_id: str,
    start: str,
    end: str,
    options: RunOptions,
    dry_run: bool,
    local_workers: int | None,
    metrics_address: MetricsAddress | None,
    output: OutputFormat,
) -> int | None:
    """Backfill DAG_ID for every logical date in [START, END], driven here to the end."""
    settings, dag, plan = _planned(dag_id, start, end, options)
    if dry_run:
        _show(plan, dag, output)
        return None
    # The port is bound before anything is written: one in use is bad input (exit 2).
    with serving_metrics(metrics_address) as metrics:
        if not settings.embedded_broker:  # the embedded one is a folder, made on first use
            check_broker(settings.broker_url)
        engine = _engine(settings)
        try:
            metrics.watch(engine)
            backfill_id = create_backfill(engine, dag, plan, now=pendulum.now("UTC"))
            _say_created(backfill_id, plan, driver="driving it here")
            return drive_foreground(
                settings,
                engine,
                dag,
                backfill_id,
                local_workers=local_workers,
                output=output,
                metrics=metrics,
            )
        finally:
            engine.dispose()


@click.command("create")
@backfill_arguments
@output_option
def create_command(
    *, dag_id: str, start: str, end: str, options: RunOptions, dry_run: bool, output: OutputFormat
) -> None:
    """Create a backfill of DAG_ID over [START, END] for a `backfill coordinator`; print its id."""
    settings, dag, plan = _planned(dag_id, start, end, options)
    if dry_run:
        _show(plan, dag, output)
        return
    engine = _engine(settings)
    try:
        backfill_id = create_backfill(engine, dag, plan, now=pendulum.now("UTC"))
    finally:
        engine.dispose()
    _say_created(backfill_id, plan, driver="a `backfill coordinator` drives it")
    if output is OutputFormat.JSON:
        emit_json({"id": backfill_id})
    else:
        click.echo(backfill_id)


def _planned(
    dag_id: str, start: str, end: str, options: RunOptions
) -> tuple[Settings, DAG, BackfillPlan]:
    """Settings, the DAG and the plan, or a `UserError`: before anything is written."""
    settings = Settings.from_env()
    dag = load_dags(settings.dags_folder).get(dag_id)
    intervals = resolve_range(dag, start, end)
    check_options(dag, options)  # refused before the database is even opened
    return settings, dag, _plan(settings, dag, intervals, options)


def _plan(
    settings: Settings, dag: DAG, intervals: list[DataInterval], options: RunOptions
) -> BackfillPlan:
    """The plan from the runs and pools the database holds; refuses unknown pools.

    Reads only, in one transaction; create=False: neither a dry run nor a
    refused backfill creates the embedded database.
    """
    dates = [i.logical_date for i in intervals]
    engine = db.open_engine(settings, create=False)
    if engine is None:  # no embedded database yet: no runs, and the pool of every migration
        plan = plan_backfill(dag, intervals, {}, options)
        refuse_missing_pools(plan, sorted(set(plan.pools) - {DEFAULT_POOL}))
        return plan
    try:
        with reads.reading(engine) as conn:
            existing = reads.existing_runs(conn, dag.dag_id, dates)
            plan = plan_backfill(dag, intervals, existing, options)
            missing = pools.missing(conn, plan.pools)
    finally:
        engine.dispose()
    refuse_missing_pools(plan, missing)
    return plan


def _show(plan: BackfillPlan, dag: DAG, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        emit_json(plan_json(plan, dag))
    else:
        print_plan(plan, dag)


def _engine(settings: Settings) -> Engine:
    # The embedded database is created on first use; any other must be current.
    # No pre-ping: a driver retries each transaction on a fresh connection.
    engine = db.open_engine(settings, create=True, pre_ping=False)
    assert engine is not None  # create=True always gives an engine
    return engine


def _say_created(backfill_id: int, plan: BackfillPlan, *, driver: str) -> None:
    totals = plan.totals()
    todo = totals["run"] + totals["reprocess"]
    what = (
        f"{count(todo, 'run')} and {count(totals['task_instances'], 'task instance')} to run"
        if todo
        else "nothing to run (every date is skipped; see --dry-run)"
    )
    click.echo(f"backfill {backfill_id} of {plan.dag_id} created: {what}; {driver}", err=True)
