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
ACTOR = "coordinator:test"
_S = TIState


def _placeholder(engine: Engine) -> tuple[int, int]:
    """A backfill whose `double` TI is a pending placeholder: (its id, its run's pk)."""
    q = queued_backfill(engine, dag_id="fan", tasks={"numbers": 0, "double": 2})
    with engine.begin() as conn:  # not queued: back to scheduled, as a cancel does
        pending = ti.c.id == q.ti_ids["double"]
        conn.execute(sa.update(ti).where(pending).values(state=_S.SCHEDULED.value))
    return q.ti_ids["double"], q.dag_run_id


def _tis(engine: Engine) -> list[tuple[int, str, int]]:
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(ti.c.map_index, ti.c.state, ti.c.max_tries)
            .where(ti.c.task_id == "double")
            .order_by(ti.c.map_index)
        )
        return [tuple(r) for r in rows]


def test_a_placeholder_becomes_its_tis_once(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    seen = ti_row(placeholder, run, "double", state=_S.SCHEDULED)
    with engine.begin() as conn:
        assert mapping.expand(conn, seen, 3, actor=ACTOR, now=NOW)
        assert not mapping.expand(conn, seen, 3, actor=ACTOR, now=NOW), "a second mapping"
    assert _tis(engine) == [(-1, "removed", 2), (0, "none", 2), (1, "none", 2), (2, "none", 2)]
    with engine.begin() as conn:
        journal = conn.execute(
            sa.select(ti_transitions.c.to_state, ti_transitions.c.actor).where(
                ti_transitions.c.task_instance_id == placeholder
            )
        ).all()
    assert ("removed", ACTOR) in [tuple(r) for r in journal]


def test_a_fold_and_a_shorter_list_keep_the_dropped_index_removed(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    with engine.begin() as conn:
        mapping.expand(
            conn, ti_row(placeholder, run, "double", state=_S.SCHEDULED), 3, actor=ACTOR, now=NOW
        )
        # Not run yet, or cleared: every TI `none`.
        assert mapping.fold(conn, [(run, "double")], actor=ACTOR, now=NOW) == 3
    assert _tis(engine) == [
        (-1, "none", 2),
        (0, "removed", 2),
        (1, "removed", 2),
        (2, "removed", 2),
    ]
    with engine.begin() as conn:  # folded, the placeholder is `none`: as the pass sees it
        mapping.expand(conn, ti_row(placeholder, run, "double"), 2, actor=ACTOR, now=NOW)
    assert _tis(engine) == [(-1, "removed", 2), (0, "none", 2), (1, "none", 2), (2, "removed", 2)]
    with engine.begin() as conn:  # a longer list: the dropped index comes back, one is new
        mapping.fold(conn, [(run, "double")], actor=ACTOR, now=NOW)
        mapping.expand(conn, ti_row(placeholder, run, "double"), 4, actor=ACTOR, now=NOW)
    assert [state for _, state, _ in _tis(engine)] == ["removed"] + ["none"] * 4


def test_a_placeholder_that_cannot_be_mapped_fails_saying_why(engine: Engine) -> None:
    placeholder, run = _placeholder(engine)
    with engine.begin() as conn:
        seen = ti_row(placeholder, run, "double", state=_S.SCHEDULED)
        assert mapping.fail(conn, seen, "NotMappable: not a list", actor=ACTOR, now=NOW)
        assert not mapping.fail(conn, seen, "again", actor=ACTOR, now=NOW)
        row = conn.execute(sa.select(ti.c.state, ti.c.last_error).where(ti.c.id == placeholder))
        assert tuple(row.one()) == ("upstream_failed", "NotMappable: not a list")
