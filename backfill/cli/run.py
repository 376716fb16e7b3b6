"""`backfill run DAG_ID -s START -e END [options]` and `backfill create ...`.

Every input is validated before anything is written: the options, the DAG,
the range, the options against the DAG (`--task-regex` selects a task,
`--run-backwards` without depends_on_past), then, read from the database,
the pools the backfill needs; bad input exits 2 having written nothing.
The plan is made by reading only (`backfill.client.create`). The
dry run prints that plan; otherwise the backfill is created in one
transaction (`backfill.engine.create`; a run created meanwhile is a conflict), and
`run` drives it here to its end (`backfill.cli.drive`), `create` leaves it
to a `backfill coordinator`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pendulum

from backfill.cli.drive import drive_foreground, local_workers_option
from backfill.cli.metrics_flags import MetricsAddress, metrics_options, serving_metrics
from backfill.cli.output import OutputFormat, emit_json, output_option
from backfill.cli.plan_view import print_plan
from backfill.cli.run_flags import run_options
from backfill.client.create import created_line, planned, writing_engine
from backfill.client.shapes import plan_json
from backfill.config import Settings
from backfill.engine.create import create_backfill
from backfill.engine.dispatch import check_broker
from backfill.model.dag import DAG
from backfill.planning.backfill_plan import BackfillPlan
from backfill.planning.run_options import RunOptions


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
        engine = writing_engine(settings)
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
    engine = writing_engine(settings)
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
    return settings, *planned(settings, dag_id, start, end, options)


def _show(plan: BackfillPlan, dag: DAG, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        emit_json(plan_json(plan, dag))
    else:
        print_plan(plan, dag)


def _say_created(backfill_id: int, plan: BackfillPlan, *, driver: str) -> None:
    click.echo(created_line(backfill_id, plan, driver=driver), err=True)
