"""`backfill run DAG_ID -s START -e END [options]` and `backfill create ...`.

Every input is validated before anything is read or written: options, then
the DAG, then the range; bad input exits 2 having written nothing.
`--dry-run` only reads (an embedded database that does not exist yet means
"no existing runs" and is not created). Otherwise the backfill is created in
one transaction (`backfill.create`); `run` then drives it here to its end
(`backfill.cli.drive`), `create` leaves it to a `backfill coordinator`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import pendulum

from backfill import db
from backfill.cli.drive import drive_foreground, local_workers_option
from backfill.cli.output import OutputFormat, console, emit_json, output_option, table
from backfill.config import Settings
from backfill.create import create_backfill
from backfill.dag import DAG
from backfill.discovery import load_dags
from backfill.options import ReprocessPolicy, RunOptions, parse_conf
from backfill.plan import BackfillPlan, PlannedRun, expand_range, plan_backfill
from backfill.schedule import DataInterval, parse_cli_date
from backfill.snapshot import ExistingRun
from backfill.store import reads

if TYPE_CHECKING:  # annotations only: SQL stays in backfill.store
    from sqlalchemy.engine import Engine

_CONF_SHOWN = 200  # characters of --conf echoed in the table header

_OPTIONS = (
    click.option(
        "--reprocess",
        type=click.Choice([p.value for p in ReprocessPolicy]),
        default=ReprocessPolicy.NONE.value,
        show_default=True,
        help="Existing finished runs to run again: none, failed runs, or failed and successful.",
    ),
    click.option("--conf", metavar="JSON", help="A JSON object passed to every task as ctx.conf."),
    click.option(
        "--max-active-runs",
        type=int,
        metavar="N",
        help="Runs in flight at once (a rolling window); default: the DAG's max_active_runs.",
    ),
)


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `run` and `create` share; the command receives them as `options: RunOptions`."""

    @functools.wraps(fn)
    def build(
        *args: Any, reprocess: str, conf: str | None, max_active_runs: int | None, **kwargs: Any
    ) -> Any:
        options = RunOptions(
            reprocess=ReprocessPolicy(reprocess),
            conf={} if conf is None else parse_conf(conf),
            max_active_runs=max_active_runs,
        )
        return fn(*args, options=options, **kwargs)

    for option in reversed(_OPTIONS):
        build = option(build)
    return build


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
@output_option
def run_command(
    *,
    dag_id: str,
    start: str,
    end: str,
    options: RunOptions,
    dry_run: bool,
    local_workers: int | None,
    output: OutputFormat,
) -> int | None:
    """Backfill DAG_ID for every logical date in [START, END], driven here to the end."""
    settings, dag, intervals = _validated(dag_id, start, end)
    if dry_run:
        _dry_run(settings, dag, intervals, options, output)
        return None
    engine = _engine(settings)
    try:
        backfill_id, plan = _create(engine, dag, intervals, options)
        _say_created(backfill_id, plan, driver="driving it here")
        return drive_foreground(
            settings, engine, dag, backfill_id, local_workers=local_workers, output=output
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
    settings, dag, intervals = _validated(dag_id, start, end)
    if dry_run:
        _dry_run(settings, dag, intervals, options, output)
        return
    engine = _engine(settings)
    try:
        backfill_id, plan = _create(engine, dag, intervals, options)
    finally:
        engine.dispose()
    _say_created(backfill_id, plan, driver="a `backfill coordinator` drives it")
    if output is OutputFormat.JSON:
        emit_json({"id": backfill_id})
    else:
        click.echo(backfill_id)


def _validated(dag_id: str, start: str, end: str) -> tuple[Settings, DAG, list[DataInterval]]:
    """Settings, the DAG and its intervals, or a `UserError`: before anything is written."""
    settings = Settings.from_env()
    dag = load_dags(settings.dags_folder).get(dag_id)
    return settings, dag, resolve_range(dag, start, end)


def _dry_run(
    settings: Settings,
    dag: DAG,
    intervals: list[DataInterval],
    options: RunOptions,
    output: OutputFormat,
) -> None:
    plan = plan_backfill(dag, intervals, _existing_runs(settings, dag, intervals), options)
    if output is OutputFormat.JSON:
        emit_json(plan_json(plan, dag))
    else:
        print_plan(plan, dag)


def _engine(settings: Settings) -> Engine:
    # The embedded database is created on first use; any other must be current.
    engine = db.open_engine(settings, create=True)
    assert engine is not None  # create=True always gives an engine
    return engine


def _create(
    engine: Engine, dag: DAG, intervals: list[DataInterval], options: RunOptions
) -> tuple[int, BackfillPlan]:
    with reads.reading(engine) as conn:
        existing = reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    plan = plan_backfill(dag, intervals, existing, options)
    return create_backfill(engine, dag, plan, now=pendulum.now("UTC")), plan


def _say_created(backfill_id: int, plan: BackfillPlan, *, driver: str) -> None:
    totals = plan.totals()
    todo = totals["run"] + totals["reprocess"]
    what = (
        f"{_count(todo, 'run')} and {_count(totals['task_instances'], 'task instance')} to run"
        if todo
        else "nothing to run (every date is skipped; see --dry-run)"
    )
    click.echo(f"backfill {backfill_id} of {plan.dag_id} created: {what}; {driver}", err=True)


def _existing_runs(
    settings: Settings, dag: DAG, intervals: list[DataInterval]
) -> dict[datetime, ExistingRun]:
    # create=False: a dry run must not create the embedded database.
    engine = db.open_engine(settings, create=False)
    if engine is None:
        return {}
    try:
        with reads.reading(engine) as conn:
            return reads.existing_runs(conn, dag.dag_id, [i.logical_date for i in intervals])
    finally:
        engine.dispose()


def plan_json(plan: BackfillPlan, dag: DAG) -> dict[str, Any]:
    return {
        "dag_id": plan.dag_id,
        "dry_run": True,
        "timezone": dag.timezone.name,
        "options": plan.options.as_json(),
        "runs": [_run_json(run, dag) for run in plan.runs],
        "totals": plan.totals(),
    }


def _run_json(run: PlannedRun, dag: DAG) -> dict[str, Any]:
    return {
        "logical_date": run.logical_date.isoformat(),
        "logical_date_local": run.logical_date.in_timezone(dag.timezone).isoformat(),
        "data_interval_start": run.interval.start.isoformat(),
        "data_interval_end": run.interval.end.isoformat(),
        "action": run.action.value,
        "reason": run.reason,
        "run_id": run.run_id,
        "task_ids": list(run.task_ids),
    }


def print_plan(plan: BackfillPlan, dag: DAG) -> None:
    out = console()
    out.print(f"Dry run of DAG {dag.dag_id} (schedule {dag.schedule.describe()}): nothing written.")
    out.print(_params_line(plan.options, dag))
    local_tz = dag.timezone.name != "UTC"
    dates = [f"logical date ({dag.timezone.name})"] if local_tz else []
    tbl = table(*dates, "logical date (UTC)", "action", "reason", "task instances")
    for run in plan.runs:
        local = [_when(run.logical_date.in_timezone(dag.timezone))] if local_tz else []
        tis = f"{len(run.task_ids)}: {', '.join(run.task_ids)}" if run.task_ids else "0"
        tbl.add_row(*local, _when(run.logical_date), run.action.value, run.reason, tis)
    out.print(tbl)
    totals = plan.totals()
    out.print(
        f"{_count(totals['runs'], 'run')}: {totals['run']} to run, "
        f"{totals['reprocess']} to reprocess, {totals['skip']} to skip; "
        f"{_count(totals['task_instances'], 'task instance')} to run."
    )


def _params_line(options: RunOptions, dag: DAG) -> str:
    conf = json.dumps(options.conf, ensure_ascii=False)
    if len(conf) > _CONF_SHOWN:
        conf = conf[:_CONF_SHOWN] + "..."
    limit = options.max_active_runs or f"{dag.max_active_runs} (the DAG's)"
    return f"reprocess={options.reprocess.value}, max_active_runs={limit}, conf={conf}"


def _when(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
