"""The JSON shapes of the public contract (DESIGN sections 4 and 7), built in one place.

Invariants:
- times are ISO 8601 in UTC, as the store returns them, or null;
- state counts list every state of the enum, zeros included, so their keys
  never depend on progress;
- `task_json_text` writes a TI as text, not through `json.dumps` of a dict: a
  stream of 440k rows feels the difference (see its docstring).
"""

from __future__ import annotations

from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from backfill.model.dag import DAG
from backfill.model.states import RUN_FINISHED, RunState, TIState
from backfill.planning.backfill_plan import BackfillPlan, PlannedRun
from backfill.store.clear import Cleared, Selected
from backfill.store.status import Listed, Summary, TaskRow


def iso(moment: datetime | None) -> str | None:
    """A time in JSON: ISO 8601 (UTC, as the store returns it), or null."""
    return None if moment is None else moment.isoformat()


def runs_finished(found: Summary) -> tuple[int, int]:
    """How many of the backfill's runs have finished, and how many it has."""
    done = sum(found.runs.get(state.value, 0) for state in RUN_FINISHED)
    return done, sum(found.runs.values())


def summary_json(found: Summary) -> dict[str, Any]:
    """`status ID -o json`, without its story (`story.story_json` adds it)."""
    done, total = runs_finished(found)
    return {
        "id": found.id,
        "dag_id": found.dag_id,
        "state": found.state.value,
        "start": iso(found.start),
        "end": iso(found.end),
        "created_at": iso(found.created_at),
        "updated_at": iso(found.updated_at),
        "runs": {state.value: found.runs.get(state.value, 0) for state in RunState},
        "task_instances": {
            state.value: found.task_instances.get(state.value, 0) for state in TIState
        },
        "progress": {"runs_finished": done, "runs_total": total},
        "options": found.options,
        "conf": found.conf,
    }


def listed_json(
    row: Listed, *, pace: tuple[float | None, float | None] = (None, None)
) -> dict[str, Any]:
    """One backfill of `list -o json`; `pace` is its rate (TIs a minute) and ETA (seconds)
    while it runs, as `status` tells them."""
    return {
        "id": row.id,
        "dag_id": row.dag_id,
        "state": row.state.value,
        "start": iso(row.start),
        "end": iso(row.end),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "runs_total": row.runs_total,
        "runs_finished": row.runs_finished,
        "task_instances_total": row.task_instances_total,
        "task_instances_finished": row.task_instances_finished,
        "rate_per_minute": pace[0],
        "eta_seconds": pace[1],
    }


def task_json_text(row: TaskRow) -> str:
    """`row` as one compact JSON object: DESIGN's keys (section 4), then max_tries, pool,
    last_error, result (its return value while it is success, or null) and map_index
    (-1: not a mapped task's element). Written as
    text rather than `json.dumps` of a dict, which costs a third more CPU a row: a stream
    of 440k rows feels it. Strings are escaped by `json`'s own encoder; numbers, dates
    and states need no escaping; the result is JSON text already."""
    return (
        f'{{"dag_id": {_text(row.dag_id)}, "task_id": {_text(row.task_id)}, '
        f'"run_id": {_text(row.run_id)}, "logical_date": {_time(row.logical_date)}, '
        f'"state": "{row.state.value}", "try_number": {row.try_number}, '
        f'"max_tries": {row.max_tries}, "hostname": {_text(row.hostname)}, '
        f'"start_date": {_time(row.start_date)}, "end_date": {_time(row.end_date)}, '
        f'"pool": {_text(row.pool)}, "last_error": {_text(row.last_error)}, '
        f'"result": {row.result or "null"}, '  # already JSON text: written as it is
        f'"map_index": {row.map_index}}}'
    )


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _time(moment: datetime | None) -> str:
    return "null" if moment is None else f'"{moment.isoformat()}"'


def plan_json(plan: BackfillPlan, dag: DAG) -> dict[str, Any]:
    """The dry run: `run/create --dry-run -o json`."""
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


def cleared_json(
    backfill_id: int, targets: list[Selected], cleared: Cleared | None
) -> dict[str, Any]:
    """`clear -o json`: what was selected and, unless a dry run, what was cleared."""
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
