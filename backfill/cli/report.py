"""The final report of a backfill driven in the foreground: a table's words, or JSON.

Invariants:
- the report names every failed TI grouped by its error (those that never ran
  because an upstream failed, last), and every deadlocked TI grouped by the
  reason it can never run, followed by what to do;
- the JSON lists every run and TI state, zeros included (as `backfill
  status`), so its keys never depend on progress; `deadlock` is `{}` when
  there is none.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from backfill.coordinator import Outcome, Progress, TIKey
from backfill.progress import format_counts, group_failed, print_groups
from backfill.states import BACKFILL_FINISHED, BackfillState, RunState, TIState

NO_ERROR = "an upstream task failed (no error of its own)"


def _ti_json(key: TIKey) -> dict[str, Any]:
    return {
        "dag_id": key.dag_id,
        "task_id": key.task_id,
        "run_id": key.run_id,
        "logical_date": key.logical_date.isoformat(),
        "try_number": key.try_number,
    }


def outcome_json(
    backfill_id: int, dag_id: str, outcome: Outcome, final: Progress
) -> dict[str, Any]:
    return {
        "id": backfill_id,
        "dag_id": dag_id,
        "state": outcome.state.value,
        # Every state, zeros included (as `backfill status`): keys never depend on progress.
        "runs": {s.value: final.runs.get(s.value, 0) for s in RunState},
        "task_instances": {s.value: final.task_instances.get(s.value, 0) for s in TIState},
        "failed": [{**_ti_json(key), "last_error": error} for key, error in outcome.failed],
        "deadlock": {
            reason: [_ti_json(key) for key in keys]
            for reason, keys in (outcome.deadlock or {}).items()
        },
    }


def print_report(
    out: Console, backfill_id: int, dag_id: str, outcome: Outcome, final: Progress
) -> None:
    out.print(f"backfill {backfill_id} of {dag_id}: {outcome.state.value}")
    out.print(f"runs: {format_counts(final.runs)}", soft_wrap=True)
    out.print(f"task instances: {format_counts(final.task_instances)}", soft_wrap=True)
    if outcome.failed:
        groups = group_failed(outcome.failed, no_error=NO_ERROR)
        print_groups(out, "failed task instances, by error:", groups)
    if outcome.deadlock:
        print_groups(
            out, "deadlocked: these task instances can never run, by reason:", outcome.deadlock
        )
        out.print(
            "nothing was left to run, so the backfill has failed; fix the cause above, then "
            "run these dates again with --reprocess failed",
            soft_wrap=True,
        )
    elif outcome.waiting and outcome.state not in BACKFILL_FINISHED:
        print_groups(out, "held back at the last pass, by reason:", outcome.waiting)
    if outcome.state is BackfillState.CANCELLED:
        out.print(f"backfill {backfill_id} was cancelled")
