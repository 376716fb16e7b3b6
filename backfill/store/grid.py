"""Reads for `backfill watch` (store): one page of a backfill's dates, TI by TI, and
the dates around it counted; and, for the web page's grid, every TI at once.

Invariants:
- bounded at any backfill size: TIs are read row by row for the page's runs only
  (at most `limit` dates x the DAG's tasks); the dates before and after the page
  are counted by TI state in ONE aggregate (GROUP BY), never read to be counted;
- every function reads in the caller's transaction: call them in one snapshot
  (`status.reading`, `reads.reading`) with `status.summary`, so the page, the
  hidden dates and the totals agree with each other while workers finish tasks;
- a backfill's dates are its runs' logical dates, one run per date (the unique
  (dag_id, logical_date)), in ascending order whatever order the runs were made in;
- a cell is a (run, task): one TI, or a mapped task's TIs in that run. Those are
  read counted by state (GROUP BY run, task, state: a mapped task of 1,000
  elements costs a row per state, not per TI) and folded into one `Cell` showing
  their most telling state (`TELLING`); `removed` TIs (history: an element a
  re-mapping dropped, or a task gone from the DAG) are shown only when nothing
  else is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import RunState, TIState
from backfill.store.schema import dag_runs, task_instances

ti, run = task_instances, dag_runs
_RUN_TIS = run.join(ti, ti.c.dag_run_id == run.c.id)  # a backfill's TIs, through its runs
_STATES = {s.value: s for s in TIState}
_S = TIState
# The state a cell of several TIs (a mapped task's, in one run) shows: the first of
# these that one of them is in. What asks for the operator comes first (failures),
# then work in flight (its next change is soon), then work not started, then work
# done; `removed` rows are history, shown only when a cell has nothing else.
TELLING: tuple[TIState, ...] = (
    _S.FAILED,
    _S.UPSTREAM_FAILED,
    _S.RUNNING,
    _S.UP_FOR_RETRY,
    _S.UP_FOR_RESCHEDULE,
    _S.QUEUED,
    _S.SCHEDULED,
    _S.NONE,
    _S.SUCCESS,
    _S.SKIPPED,
    _S.REMOVED,
)
_RANK = {state: i for i, state in enumerate(TELLING)}


@dataclass(frozen=True, kw_only=True)
class Cell:
    """A (run, task) of the grid: its TI's state, or a mapped task's TIs folded."""

    state: TIState  # the most telling of its TIs' states
    map_index: int  # the TI showing it: the first in that state (-1: not a mapped task's)
    counts: Mapping[TIState, int]  # a mapped task's TIs by state, in TELLING order, no
    # `removed`; empty for a task that is not mapped (or not mapped yet) in this run

    @property
    def mapped(self) -> bool:
        return bool(self.counts)


# (dag_run_id, task_id, state, how many TIs, their lowest map index): a cell's TIs
# counted by state, as `_counted` reads them.
Counted = tuple[int, str, str, int, int]


def fold(counted: Iterable[Counted]) -> dict[tuple[int, str], Cell]:
    """(dag_run_id, task_id) -> its `Cell`, from its TIs counted by state. A count of map
    indexes >= 0 is a mapped task's elements (its placeholder became the first of them)."""
    seen: dict[tuple[int, str], list[tuple[TIState, int, int]]] = {}
    for dag_run_id, task_id, state, n, first in counted:
        seen.setdefault((dag_run_id, task_id), []).append((_STATES[state], n, first))
    return {key: _cell(groups) for key, groups in seen.items()}


def _cell(groups: list[tuple[TIState, int, int]]) -> Cell:
    if len(groups) == 1 and groups[0][2] < 0:  # one TI, not a mapped one: most cells
        return Cell(state=groups[0][0], map_index=-1, counts={})
    groups.sort(key=lambda g: _RANK[g[0]])
    live = [g for g in groups if g[0] is not _S.REMOVED] or groups
    state, _, first = live[0]
    counts: dict[TIState, int] = {
        s: n for s, n, first_index in live if first_index >= 0 and s is not _S.REMOVED
    }
    return Cell(state=state, map_index=first, counts=counts)


def most_telling(states: Mapping[int, str]) -> int:
    """Of a mapped task's TIs in one run (map index -> state, not empty), the one its
    cell shows (`fold`): the first in the most telling state."""
    return min(states, key=lambda index: (_RANK[_STATES[states[index]]], index))


@dataclass(frozen=True, kw_only=True)
class GridRow:
    """One date of the page: its run's state and its TIs' states."""

    logical_date: datetime
    run_state: RunState
    cells: dict[str, TIState]  # task_id -> state (`Cell.state`); no TI of a task: absent
    mapped: frozenset[str] = field(default=frozenset())  # the tasks mapped in this run


@dataclass(frozen=True, kw_only=True)
class Window:
    """A page of dates: `offset` dates come before it, `rows` are on it."""

    offset: int
    rows: tuple[GridRow, ...]
    before: dict[TIState, int]  # the TIs of the dates before the page, by state
    after: dict[TIState, int]  # the TIs of the dates after it, by state


def task_ids(conn: Connection, backfill_id: int) -> tuple[str, ...]:
    """The backfill's tasks in creation (topological) order. ONE aggregate statement:
    its result is the DAG's tasks (a few hundred at most)."""
    stmt = (
        sa.select(ti.c.task_id)
        .select_from(_RUN_TIS)
        .where(run.c.backfill_id == backfill_id)
        .group_by(ti.c.task_id)
        .order_by(sa.func.min(ti.c.id), ti.c.task_id)
    )
    return tuple(conn.execute(stmt).scalars())


def _first_date(state: RunState) -> sa.ColumnElement[datetime]:
    return sa.func.min(sa.case((run.c.state == state.value, run.c.logical_date)))


def frontier(conn: Connection, backfill_id: int) -> int:
    """How many dates come before the frontier of work: the earliest date whose run is
    running, else the earliest not started yet (queued), else the earliest failed one;
    0 when there is none (every run succeeded, or there are no runs). Two aggregate
    statements over the backfill's runs, not its TIs."""
    firsts = conn.execute(
        sa.select(
            _first_date(RunState.RUNNING),
            _first_date(RunState.QUEUED),
            _first_date(RunState.FAILED),
        ).where(run.c.backfill_id == backfill_id)
    ).one()
    anchor = next((first for first in firsts if first is not None), None)
    if anchor is None:
        return 0
    before = sa.select(sa.func.count()).where(
        run.c.backfill_id == backfill_id, run.c.logical_date < anchor
    )
    return int(conn.execute(before).scalar_one())


def window(conn: Connection, backfill_id: int, *, offset: int, limit: int) -> Window:
    """The `limit` dates after the first `offset` of the backfill, with their TIs' states,
    and the TIs of every other date counted by state on either side. Three statements:
    the page of runs, their TIs, and one aggregate of the rest."""
    page = conn.execute(
        sa.select(run.c.id, run.c.logical_date, run.c.state)
        .where(run.c.backfill_id == backfill_id)
        .order_by(run.c.logical_date)
        .limit(limit)
        .offset(offset)
    ).all()
    cells: dict[int, dict[str, Cell]] = {row.id: {} for row in page}
    if page:  # one id per date shown: a screenful at most
        shown = _counted(ti.c.dag_run_id.in_(list(cells)))
        for (dag_run_id, task_id), cell in fold(conn.execute(shown)).items():
            cells[dag_run_id][task_id] = cell
    rows = tuple(
        GridRow(
            logical_date=r.logical_date,
            run_state=RunState(r.state),
            cells={task_id: cell.state for task_id, cell in cells[r.id].items()},
            mapped=frozenset(task_id for task_id, cell in cells[r.id].items() if cell.mapped),
        )
        for r in page
    )
    first, last = (page[0].logical_date, page[-1].logical_date) if page else (None, None)
    before, after = _hidden(conn, backfill_id, first, last)
    return Window(offset=offset, rows=rows, before=before, after=after)


def _hidden(
    conn: Connection, backfill_id: int, first: datetime | None, last: datetime | None
) -> tuple[dict[TIState, int], dict[TIState, int]]:
    """The TIs before `first` and after `last`, by state (an empty page: every TI is
    before it). The side is computed in a subquery and grouped on outside it: grouping
    on a CASE with bound dates would repeat them as new parameters, which PostgreSQL
    cannot match to the selected expression."""
    where = [run.c.backfill_id == backfill_id]
    side: sa.ColumnElement[str] = sa.literal("before")
    if first is not None and last is not None:
        where.append(sa.or_(run.c.logical_date < first, run.c.logical_date > last))
        side = sa.case((run.c.logical_date < first, "before"), else_="after")
    sides = sa.select(side.label("side"), ti.c.state).select_from(_RUN_TIS).where(*where).subquery()
    stmt = sa.select(sides.c.side, sides.c.state, sa.func.count()).group_by(
        sides.c.side, sides.c.state
    )
    counts: dict[str, dict[TIState, int]] = {"before": {}, "after": {}}
    for which, state, n in conn.execute(stmt):
        counts[which][_STATES[state]] = int(n)
    return counts["before"], counts["after"]


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """One date of the whole grid (`runs_of`)."""

    id: int
    logical_date: datetime
    state: RunState


def runs_of(conn: Connection, backfill_id: int) -> list[RunRow]:
    """The backfill's runs by logical date: ONE statement, a row a date."""
    stmt = (
        sa.select(run.c.id, run.c.logical_date, run.c.state)
        .where(run.c.backfill_id == backfill_id)
        .order_by(run.c.logical_date)
    )
    return [
        RunRow(id=row.id, logical_date=row.logical_date, state=RunState(row.state))
        for row in conn.execute(stmt)
    ]


def _counted(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The TIs matching `where` counted by (run, task, state), with their lowest map
    index (`Counted`): a row a TI for a task that is not mapped."""
    return (
        sa.select(
            ti.c.dag_run_id, ti.c.task_id, ti.c.state, sa.func.count(), sa.func.min(ti.c.map_index)
        )
        .select_from(_RUN_TIS)
        .where(*where)
        .group_by(ti.c.dag_run_id, ti.c.task_id, ti.c.state)
    )


def every_cell(conn: Connection, backfill_id: int) -> Iterator[tuple[int, str, Cell]]:
    """Every cell of the backfill as (dag_run_id, task_id, cell), in no order: the web
    page's grid. ONE aggregate statement over the runs' (backfill_id, ...) index and the
    TIs' (dag_run_id, task_id, map_index) key; plain columns, no date to decode, since a
    backfill of 1,000 dates x 50 tasks is 50k cells and the grid is polled."""
    stmt = _counted(run.c.backfill_id == backfill_id)
    counted = conn.execution_options(yield_per=5000).execute(stmt)
    for (dag_run_id, task_id), cell in fold(counted).items():
        yield dag_run_id, task_id, cell
