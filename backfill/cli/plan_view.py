"""The dry run's output: a backfill plan as a table or as JSON.

Invariants:
- the plan is shown as planned: one row per logical date in the order the
  runs would start, each with its action, the reason, and the TIs it would
  run (only those `--task-regex` selects);
- the header echoes every option, so what was asked is what is read back;
  the JSON carries the options in full (`RunOptions.as_json`), the selected
  task ids and the pools the backfill needs, with who needs each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backfill.cli.output import console, table
from backfill.cli.run_flags import describe
from backfill.model.dag import DAG
from backfill.planning.backfill_plan import BackfillPlan, PlannedRun


def plan_json(plan: BackfillPlan, dag: DAG) -> dict[str, Any]:
    return {
        "dag_id": plan.dag_id,
        "dry_run": True,
        "timezone": dag.timezone.name,
        "options": plan.options.as_json(),
        "task_ids": list(plan.task_ids),
        "pools": {pool: list(users) for pool, users in plan.pools.items()},
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
    for line in describe(plan.options, dag, plan.task_ids):
        out.print(line, soft_wrap=True)
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
        f"{count(totals['runs'], 'run')}: {totals['run']} to run, "
        f"{totals['reprocess']} to reprocess, {totals['skip']} to skip; "
        f"{count(totals['task_instances'], 'task instance')} to run."
    )


def _when(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
