"""The final report of a backfill driven in the foreground: a table's words, or JSON.

Invariants:
- the report names every failed TI grouped by its error (those that never ran
  because an upstream failed, last), and every deadlocked TI grouped by the
  reason it can never run, as the planner words it, followed by what to do;
- when a deadlock reason mentions depends_on_past, the report says once how
  to let the first date run without its past (`--ignore-first-depends-on-past`,
  Airflow's `-I` hint); the JSON lists the same advice under `hints`;
- each failed try is named with the command that prints its log
  (`log_command`: `backfill logs ID TASK -d DATE --try N`), in the table (at
  most `LOG_COMMANDS` of them) and in the JSON (every one);
- the JSON lists every run and TI state, zeros included (as `backfill
  status`), so its keys never depend on progress; `deadlock` is `{}` and
  `hints` is `[]` when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from backfill.cli.progress import format_counts, group_failed, print_groups
from backfill.client.story import NO_ERROR, hints, log_command
from backfill.engine.coordinator import Outcome, Progress, TIKey
from backfill.model.states import BACKFILL_FINISHED, BackfillState

LOG_COMMANDS = 50  # failed tries whose log command the table names


def print_report(
    out: Console, backfill_id: int, dag_id: str, outcome: Outcome, final: Progress
) -> None:
    out.print(f"backfill {backfill_id} of {dag_id}: {outcome.state.value}")
    out.print(f"runs: {format_counts(final.runs)}", soft_wrap=True)
    out.print(f"task instances: {format_counts(final.task_instances)}", soft_wrap=True)
    if outcome.failed:
        groups = group_failed(outcome.failed, no_error=NO_ERROR)
        print_groups(out, "failed task instances, by error:", groups)
        print_log_commands(out, backfill_id, outcome.failed)
    if outcome.deadlock:
        print_groups(
            out, "deadlocked: these task instances can never run, by reason:", outcome.deadlock
        )
        out.print(
            "nothing was left to run, so the backfill has failed; fix the cause above, then "
            "run these dates again with --reprocess failed",
            soft_wrap=True,
        )
        for hint in hints(outcome.deadlock):
            out.print(f"hint: {hint}", soft_wrap=True)
    elif outcome.waiting and outcome.state not in BACKFILL_FINISHED:
        print_groups(out, "held back at the last pass, by reason:", outcome.waiting)
    if outcome.state is BackfillState.CANCELLED:
        out.print(f"backfill {backfill_id} was cancelled")


def print_log_commands(
    out: Console, backfill_id: int, failed: Sequence[tuple[TIKey, str | None]]
) -> None:
    """The command printing each failed try's log (at most `LOG_COMMANDS` of them)."""
    commands = [c for key, _ in failed if (c := log_command(backfill_id, key))]
    if not commands:
        return
    out.print("the log of each failed try:")
    for command in commands[:LOG_COMMANDS]:
        out.print(f"  {command}", soft_wrap=True)
    if len(commands) > LOG_COMMANDS:
        more = len(commands) - LOG_COMMANDS
        out.print(f"  ... and {more} more (`backfill tasks {backfill_id} --state failed`)")
