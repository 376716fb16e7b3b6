"""Planning and creating a backfill: `run`, `create` and `POST /api/v1/backfills`.

Invariants:
- every input is validated before anything is written: the options, the DAG,
  the range, the options against the DAG (`--task-regex` selects a task,
  `--run-backwards` without depends_on_past), then, read from the database,
  the pools the backfill needs; bad input is a `UserError`, nothing written;
- the plan is made by reading only: an embedded database that does not exist
  yet means "no existing runs, only `default_pool`" and is not created;
- the backfill is then created in one transaction (`engine.create.create_backfill`;
  a run created meanwhile is a conflict).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from backfill.config import Settings
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


def resolve_range(dag: DAG, start: str, end: str) -> list[DataInterval]:
    """The DAG's intervals in [START, END], dates without offset read in the DAG's timezone."""
    first = parse_cli_date(start, dag.timezone, option="--start-date")
    last = parse_cli_date(end, dag.timezone, option="--end-date")
    return expand_range(dag, first, last)


def planned(
    settings: Settings, dag_id: str, start: str, end: str, options: RunOptions
) -> tuple[DAG, BackfillPlan]:
    """The DAG and the plan, or a `UserError`: before anything is written."""
    dag = load_dags(settings.dags_folder).get(dag_id)
    intervals = resolve_range(dag, start, end)
    check_options(dag, options)  # refused before the database is even opened
    return dag, _plan(settings, dag, intervals, options)


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


def writing_engine(settings: Settings) -> Engine:
    """The engine a backfill is created with. The embedded database is created on first
    use; any other must be current. No pre-ping: a driver retries each transaction on
    a fresh connection."""
    engine = db.open_engine(settings, create=True, pre_ping=False)
    assert engine is not None  # create=True always gives an engine
    return engine


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def created_line(backfill_id: int, plan: BackfillPlan, *, driver: str) -> str:
    """What a user is told once the backfill exists."""
    totals = plan.totals()
    todo = totals["run"] + totals["reprocess"]
    what = (
        f"{count(todo, 'run')} and {count(totals['task_instances'], 'task instance')} to run"
        if todo
        else "nothing to run (every date is skipped; see --dry-run)"
    )
    return f"backfill {backfill_id} of {plan.dag_id} created: {what}; {driver}"
