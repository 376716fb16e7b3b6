"""A mapped task's TIs in the store (`store.mapping`): made from the placeholder by one
conditional statement on it, folded back into it by a clear of its source, made again
over a shorter list (the extra map index stays `removed`), and a placeholder failed with
its reason. Each backend."""

from __future__ import annotations

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from support.factories import queued_backfill, ti_row

from backfill.model.states import TIState
from backfill.store import mapping
from backfill.store.schema import task_instances, ti_transitions

ti = task_instances
NOW = pendulum.datetime(2024, 6, 1, tz="UTC")
ACTOR = "coordinator:mapper"
_S = TIState


def _placeholder(engine: Engine) -> tuple[int, int]:
    """A backfill whose `double` TI is a pending placeholder: (its id, its run's pk)."""
    q = queued_backfill(engine, dag_id="fan", tasks={"numbers": 0, "double": 2})
    with engine.begin() as conn:  # not queued: back to scheduled, as a cancel does
        pending = ti.c.id == q.ti_ids["double"]
        conn.execute(sa.update(ti).where(pending).values(state=_S.SCHEDULED.value))
    return q.ti_ids["double"], q.dag_run_id


def _tis(engine: Engine) -> list[tuple[int, str, int, int]]:
    """(map index, state, try number, max tries) of each TI of `double`."""
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(ti.c.map_index, ti.c.state, ti.c.try_number, ti.c.max_tries)
            .where(ti.c.task_id == "double")
            .order_by(ti.c.map_index)
        )
        return [tuple(r) for r in rows]


def test_a_placeholder_becomes_the_first_of_its_tis_once(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    seen = ti_row(placeholder, run, "double", state=_S.SCHEDULED)
    with engine.begin() as conn:
        assert mapping.expand(conn, seen, 3, actor=ACTOR, now=NOW)
        assert not mapping.expand(conn, seen, 3, actor=ACTOR, now=NOW), "a second mapping"
    # The placeholder (try 1 of 2 here) is map index 0; the others get its one retry.
    assert _tis(engine) == [(0, "scheduled", 1, 2), (1, "none", 0, 1), (2, "none", 0, 1)]
    with engine.begin() as conn:
        first = conn.execute(sa.select(ti.c.id).where(ti.c.map_index == 0)).scalar_one()
        journal = conn.execute(
            sa.select(ti_transitions.c.actor).where(ti_transitions.c.task_instance_id == first)
        ).scalars()
        assert first == placeholder
        assert ACTOR not in list(journal)  # renumbered, not a state change


def test_a_fold_and_a_shorter_list_keep_the_dropped_index_removed(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    seen = ti_row(placeholder, run, "double", state=_S.SCHEDULED)
    with engine.begin() as conn:
        mapping.expand(conn, seen, 3, actor=ACTOR, now=NOW)
        assert mapping.fold(conn, [(run, "double")], actor=ACTOR, now=NOW) == 0, "0 not cleared"
        first = ti.c.id == placeholder
        conn.execute(sa.update(ti).where(first).values(state=_S.NONE.value))  # as a clear does
        assert mapping.fold(conn, [(run, "double")], actor=ACTOR, now=NOW) == 1
    assert [(i, state) for i, state, _, _ in _tis(engine)] == [
        (-1, "none"),
        (1, "removed"),
        (2, "removed"),
    ]
    with engine.begin() as conn:  # folded, the placeholder is `none`: as the pass sees it
        mapping.expand(conn, ti_row(placeholder, run, "double"), 2, actor=ACTOR, now=NOW)
    assert [(i, state) for i, state, _, _ in _tis(engine)] == [
        (0, "none"),
        (1, "none"),
        (2, "removed"),
    ]
    with engine.begin() as conn:  # a longer list: the dropped index comes back, one is new
        assert mapping.fold(conn, [(run, "double")], actor=ACTOR, now=NOW) == 1
        mapping.expand(conn, ti_row(placeholder, run, "double"), 4, actor=ACTOR, now=NOW)
    assert [(i, state) for i, state, _, _ in _tis(engine)] == [(i, "none") for i in range(4)]


def test_a_placeholder_that_cannot_be_mapped_fails_saying_why(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    with engine.begin() as conn:
        seen = ti_row(placeholder, run, "double", state=_S.SCHEDULED)
        assert mapping.fail(conn, seen, "NotMappable: not a list", actor=ACTOR, now=NOW)
        assert not mapping.fail(conn, seen, "again", actor=ACTOR, now=NOW)
        row = conn.execute(sa.select(ti.c.state, ti.c.last_error).where(ti.c.id == placeholder))
        assert tuple(row.one()) == ("upstream_failed", "NotMappable: not a list")
