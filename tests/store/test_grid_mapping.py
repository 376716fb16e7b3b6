"""`store.grid` folds a mapped task's TIs into one cell a run, on real SQLite and PostgreSQL.

A cell of several TIs shows their most telling state (`grid.TELLING`: failures, then
work in flight, then work not started, then work done), the TI showing it (the first
in that state), and its TIs counted by state; `removed` rows (the placeholder once
mapped, an element a re-mapping dropped) are left out. A task not mapped is one TI, as
before; the web page's `every_cell` and `backfill watch`'s `window` agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from support.factories import dated_backfill, move_tis, ti_row
from support.states import force_state

from backfill.model.states import TIState
from backfill.store import grid, mapping, reads
from backfill.store.schema import dag_runs, task_instances

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DATES = [T0, T0 + timedelta(days=1), T0 + timedelta(days=2)]
TASKS = ["numbers", "double", "total"]
_S = TIState
ti = task_instances


def _map(conn: Connection, backfill_id: int, day: datetime, count: int) -> int:
    """`double` on `day` mapped over `count` elements; its run's key."""
    row = conn.execute(
        sa.select(ti.c.id, ti.c.dag_run_id)
        .select_from(ti.join(dag_runs, dag_runs.c.id == ti.c.dag_run_id))
        .where(dag_runs.c.backfill_id == backfill_id, dag_runs.c.logical_date == day)
        .where(ti.c.task_id == "double", ti.c.map_index == -1)
    ).one()
    placeholder = ti_row(row.id, row.dag_run_id, "double")
    assert mapping.expand(conn, placeholder, count, actor="test", now=T0)
    return int(row.dag_run_id)


def _set(conn: Connection, dag_run_id: int, state: TIState, *indexes: int) -> None:
    where = sa.and_(
        ti.c.dag_run_id == dag_run_id, ti.c.task_id == "double", ti.c.map_index.in_(indexes)
    )
    force_state(conn, ti, where, state, updated_by="test")


@pytest.fixture
def made(engine: Engine) -> tuple[int, list[int]]:
    """Day 0: double mapped over 4 (0, 1 success, 2 failed, 3 running); day 1: over 3,
    re-mapped to 2 (index 2 removed), both success; day 2: not mapped yet."""
    with engine.begin() as conn:
        backfill_id = dated_backfill(conn, "mapping_flow", DATES, TASKS)
        move_tis(conn, backfill_id, _S.SUCCESS, DATES[:2], ["numbers"])
        first, second = _map(conn, backfill_id, DATES[0], 4), _map(conn, backfill_id, DATES[1], 3)
        _set(conn, first, _S.SUCCESS, 0, 1)
        _set(conn, first, _S.FAILED, 2)
        _set(conn, first, _S.RUNNING, 3)
        _set(conn, second, _S.SUCCESS, 0, 1)
        _set(conn, second, _S.REMOVED, 2)
    return backfill_id, [first, second]


def test_a_mapped_cell_shows_its_most_telling_ti_and_counts_the_others(
    engine: Engine, made: tuple[int, list[int]]
) -> None:
    backfill_id, (first, second) = made
    with reads.reading(engine) as conn:
        cells = {(run, task): cell for run, task, cell in grid.every_cell(conn, backfill_id)}
        page = grid.window(conn, backfill_id, offset=0, limit=3)
    assert cells[first, "double"] == grid.Cell(
        state=_S.FAILED, map_index=2, counts={_S.FAILED: 1, _S.RUNNING: 1, _S.SUCCESS: 2}
    )
    assert list(cells[first, "double"].counts) == [_S.FAILED, _S.RUNNING, _S.SUCCESS]  # TELLING
    assert cells[second, "double"] == grid.Cell(
        state=_S.SUCCESS, map_index=0, counts={_S.SUCCESS: 2}
    )  # the removed index 2 (and placeholder) left out
    assert cells[first, "numbers"] == grid.Cell(state=_S.SUCCESS, map_index=-1, counts={})
    unmapped = [cell for (run, task), cell in cells.items() if run not in (first, second)]
    assert {(c.state, c.map_index, c.mapped) for c in unmapped} == {(_S.NONE, -1, False)}
    assert len(cells) == len(DATES) * len(TASKS)

    assert [row.cells["double"] for row in page.rows] == [_S.FAILED, _S.SUCCESS, _S.NONE]
    assert [row.mapped for row in page.rows] == [{"double"}, {"double"}, set()]


@pytest.mark.parametrize(
    ("states", "shown"),
    [
        ({0: "success", 1: "up_for_retry", 2: "queued"}, 1),  # in flight before not started
        ({0: "success", 1: "scheduled", 2: "none"}, 1),
        ({0: "skipped", 1: "success"}, 1),  # done: success before skipped
        ({0: "success", 1: "upstream_failed", 2: "failed"}, 2),  # failed first
        ({0: "removed", 1: "removed"}, 0),  # nothing but history: its first
    ],
)
def test_the_most_telling_ti_is_the_first_in_the_first_state_of_telling(
    states: dict[int, str], shown: int
) -> None:
    assert grid.most_telling(states) == shown  # the TI page's choice
    by_state: dict[str, list[int]] = {}
    for index, state in states.items():
        by_state.setdefault(state, []).append(index)
    # As the GROUP BY (run, task, state) reads them: a count and the lowest map index.
    folded = grid.fold((1, "t", s, len(found), min(found)) for s, found in by_state.items())
    assert folded[1, "t"].map_index == shown
    assert folded[1, "t"].state == TIState(states[shown])
