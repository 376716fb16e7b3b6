"""Clearing TIs of a backfill so they run again: `backfill clear` and
`POST /api/v1/backfills/{id}/clear` (DESIGN section 6).

Invariants:
- the selection is validated against the backfill's DAG (a bad regex, state
  or date, a DAG changed since it was planned) and read in a transaction of
  its own; nothing matching is a `UserError`; nothing is written by either;
- the clear is one transaction of its own: a TI that changed meanwhile into a
  state that cannot be cleared is left alone and counted as not cleared;
- dates without an offset are read in the DAG's timezone, as `run` reads them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pendulum
from sqlalchemy.engine import Engine

from backfill.client.tasks import check_regex
from backfill.config import Settings
from backfill.engine import clear as engine_clear
from backfill.engine.clear import Selection
from backfill.errors import UserError
from backfill.model.dag import DAG
from backfill.model.dates import parse_cli_date
from backfill.model.discovery import load_dags
from backfill.model.states import TIState
from backfill.planning.run_options import FailurePolicy, RunOptions
from backfill.store import pass_reads, reads, status
from backfill.store.clear import CLEARABLE, Cleared, Selected
from backfill.store.errors import BackfillNotFound

_CLEARABLE = frozenset(s.value for s in CLEARABLE)


def selection(
    dag: DAG,
    *,
    task_regex: str | None = None,
    states: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
    map_indexes: Sequence[int] = (),
    downstream: bool = False,
) -> Selection:
    """What to clear, or a `UserError` naming the filter that is wrong."""
    unknown = [s for s in states if s not in _CLEARABLE]
    if unknown:
        choices = ", ".join(sorted(_CLEARABLE))
        raise UserError(f"--state {unknown[0]!r} cannot be cleared; clearable states: {choices}")
    negative = [i for i in map_indexes if i < 0]
    if negative:
        raise UserError(
            f"--map-index {negative[0]} is not a map index: a mapped task's TIs are numbered "
            "0, 1, ... (see `backfill tasks`)"
        )
    return Selection(
        task_ids=_tasks_matching(dag, task_regex),
        states=[TIState(s) for s in states] or None,
        start=None if start is None else parse_cli_date(start, dag.timezone, option="-s"),
        end=None if end is None else parse_cli_date(end, dag.timezone, option="-e"),
        map_indexes=sorted(set(map_indexes)) or None,
        downstream=downstream,
    )


def backfill_dag(engine: Engine, settings: Settings, backfill_id: int) -> tuple[DAG, RunOptions]:
    """The backfill's DAG, from the DAGs folder, and its options."""
    with reads.reading(engine) as conn:
        found = status.summary(conn, backfill_id)
    if found is None:
        raise BackfillNotFound(backfill_id)
    return load_dags(settings.dags_folder).get(found.dag_id), RunOptions.from_json(found.options)


def targets(engine: Engine, backfill_id: int, dag: DAG, asked: Selection) -> list[Selected]:
    """The TIs to clear; nothing matching is bad input. Read only: nothing is written."""
    with engine.begin() as conn:
        engine_clear.check_dag(conn, backfill_id, dag)
        found = engine_clear.select(conn, backfill_id, dag, asked)
    if not found:
        clearable = ", ".join(sorted(s.value for s in CLEARABLE))
        raise UserError(
            f"no task instance of backfill {backfill_id} matches (clearable states: "
            f"{clearable}); see `backfill tasks {backfill_id}`"
        )
    return found


def _tasks_matching(dag: DAG, regex: str | None) -> list[str] | None:
    if regex is None:
        return None
    check_regex(regex)  # a bad one is refused, as `tasks` refuses it
    pattern = re.compile(regex)
    matching = [tid for tid in dag.tasks if pattern.search(tid)]
    if not matching:
        raise UserError(
            f"--task-regex {regex!r} matches no task of DAG {dag.dag_id!r} "
            f"(its tasks: {', '.join(sorted(dag.tasks))})"
        )
    return matching


def clear(
    engine: Engine, backfill_id: int, dag: DAG, targets: list[Selected], *, actor: str
) -> Cleared:
    """Clear `targets` in one transaction; `actor` is the journal's record of who."""
    with engine.begin() as conn:
        return engine_clear.clear(
            conn, backfill_id, dag, targets, actor=actor, now=pendulum.now("UTC")
        )


def stalled_warning(engine: Engine, backfill_id: int, options: RunOptions) -> str | None:
    """Why a clear will not run, if it will not: a backfill that stops on failure starts
    no run, the reopened ones included, while a failed TI is left."""
    if options.on_failure is not FailurePolicy.STOP:
        return None
    with reads.reading(engine) as conn:
        failures_left = pass_reads.has_failures(conn, backfill_id)
    if not failures_left:
        return None
    return (
        f"backfill {backfill_id} stops on failure (it was created without "
        "--continue-on-failures) and still has failed task instances: no run starts while "
        "one is left, the reopened runs included; clear those too "
        f"(`backfill clear {backfill_id} --state failed --state upstream_failed`) to run them"
    )
