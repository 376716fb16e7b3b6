"""`backfill clear`: which TIs of a backfill to run again, and clearing them.

Invariants:
- the selection is the store's (`store.clear.select`: clearable TIs matching
  the task ids, states and date range), plus with `downstream` every
  clearable TI of a task downstream of a selected one IN THE SAME RUN, as
  Airflow's clear with downstream does; what is selected is what `clear` is
  then asked to reset, so the operator confirms exactly what changes;
- the DAG must be the one the backfill was planned with (its fingerprint):
  a clear takes each TI's retries from the DAG, and a coordinator would
  refuse to drive a changed DAG anyway (`DagChanged`, nothing written);
- clearing is one transaction (`store.clear.clear`); a coordinator (or
  `backfill resume ID`) then drives the reopened backfill;
- a mapped task cleared with a source it maps over, in the same run, is
  folded back into its placeholder, to map again over the new result
  (`backfill.model.mapping.foldable`); cleared alone, each of its TIs (each
  map index selected) runs again with the element it had.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from backfill.engine.create import task_specs
from backfill.engine.errors import DagChanged
from backfill.model.dag import DAG
from backfill.model.mapping import foldable
from backfill.model.states import TIState
from backfill.planning.run_options import RunOptions
from backfill.store import clear as store_clear
from backfill.store import mapping, runs
from backfill.store.clear import Cleared, Selected
from backfill.store.errors import BackfillNotFound

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What the operator asked to clear; None: no filter on that."""

    task_ids: list[str] | None = None
    states: list[TIState] | None = None
    start: datetime | None = None
    end: datetime | None = None
    map_indexes: list[int] | None = None  # of mapped tasks' TIs: only these map indexes
    downstream: bool = False


def check_dag(conn: Connection, backfill_id: int, dag: DAG) -> runs.BackfillRow:
    """The backfill, locked till the transaction ends; `DagChanged` unless `dag` is the
    DAG it was planned with."""
    row = runs.lock_backfill(conn, backfill_id)
    if row is None:
        raise BackfillNotFound(backfill_id)
    if row.dag_fingerprint != dag.fingerprint:
        raise DagChanged(
            f"DAG {dag.dag_id!r} changed since backfill {backfill_id} was created; a clear "
            "takes each task's retries from the DAG it was planned with: restore that DAG "
            "file, or start a new backfill"
        )
    return row


def select(conn: Connection, backfill_id: int, dag: DAG, asked: Selection) -> list[Selected]:
    """The TIs a clear of `asked` resets, by date then task."""
    found = store_clear.select(
        conn,
        backfill_id,
        task_ids=asked.task_ids,
        states=asked.states,
        start=asked.start,
        end=asked.end,
        map_indexes=asked.map_indexes,
    )
    if not asked.downstream or not found:
        return found
    wanted: dict[int, set[str]] = {}
    for t in found:
        wanted.setdefault(t.dag_run_id, set()).add(t.task_id)
    wanted = {pk: downstream_closure(dag, tasks) for pk, tasks in wanted.items()}
    more = store_clear.select(
        conn,
        backfill_id,
        task_ids=sorted(set().union(*wanted.values())),
        run_ids=sorted(wanted),
    )
    chosen = {t.ti_id: t for t in found}
    chosen.update({t.ti_id: t for t in more if t.task_id in wanted[t.dag_run_id]})
    return sorted(chosen.values(), key=lambda t: (t.logical_date, t.task_id, t.map_index))


def downstream_closure(dag: DAG, task_ids: Iterable[str]) -> set[str]:
    """`task_ids` and every task downstream of any of them."""
    seen: set[str] = set()
    todo = list(task_ids)
    while todo:
        task_id = todo.pop()
        if task_id not in seen:
            seen.add(task_id)
            todo.extend(dag.tasks[task_id].downstream_ids)
    return seen


def clear(
    conn: Connection,
    backfill_id: int,
    dag: DAG,
    targets: list[Selected],
    *,
    actor: str,
    now: datetime,
) -> Cleared:
    """Reset `targets` with the retries of `dag` and reopen what they belong to, in the
    caller's transaction (the DAG checked first, see `check_dag`)."""
    row = check_dag(conn, backfill_id, dag)
    specs = task_specs(dag, pool=RunOptions.from_json(row.options).pool)
    cleared = store_clear.clear(conn, row, targets, specs, actor=actor, now=now)
    mapping.fold(conn, foldable(dag, cleared.reset), actor=actor, now=now)
    return cleared
