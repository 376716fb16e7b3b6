"""The dry run's output: a backfill plan as a table (its JSON: `client.shapes.plan_json`).

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

from backfill.cli.output import console, table
from backfill.cli.run_flags import describe
from backfill.client.create import count
from backfill.model.dag import DAG
from backfill.planning.backfill_plan import BackfillPlan


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
