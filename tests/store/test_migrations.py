"""Upgrading a database in place: one populated at revision 0001 migrates to the head, its
rows kept, and every read and write of today works on it (each backend)."""

from __future__ import annotations

import pendulum
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from backfill.model.states import TIState
from backfill.store import results, status
from backfill.store.db import (
    alembic_config,
    create_engine_for,
    head_revision,
    migrate,
    schema_revision,
)
from backfill.store.schema import UTCDateTime, task_instances, ti_transitions

ti = task_instances

T0 = pendulum.datetime(2016, 1, 1, tz="UTC")

# Rows as a 0001 database held them: only the columns revision 0001 had.
_ROWS_0001 = [
    """INSERT INTO backfills (id, dag_id, dag_fingerprint, start, "end", state, options, conf,
           created_at, updated_at)
       VALUES (1, 'old', 'f0f0f0f0f0f0f0f0', :t0, :t0, 'success', '{}', '{}', :t0, :t0)""",
    """INSERT INTO dag_runs (id, dag_id, run_id, logical_date, data_interval_start,
           data_interval_end, backfill_id, state, conf, created_at, updated_at)
       VALUES (1, 'old', 'backfill__2016-01-01', :t0, :t0, :t0, 1, 'success', '{}', :t0, :t0)""",
    """INSERT INTO task_instances (id, dag_run_id, dag_id, task_id, state, try_number,
           max_tries, pool, queue, updated_at)
       VALUES (1, 1, 'old', 'extract', 'success', 1, 0, 'default_pool', 'default', :t0),
              (2, 1, 'old', 'load', 'failed', 1, 0, 'default_pool', 'default', :t0)""",
]


_MAPPED = {
    "dag_run_id": 1,
    "dag_id": "old",
    "task_id": "fan",
    "pool": "default_pool",
    "queue": "default",
}


def test_a_populated_0001_database_upgrades_in_place(empty_db_url: str) -> None:
    from alembic import command

    engine: Engine = create_engine_for(empty_db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            for statement in _ROWS_0001:
                typed = sa.text(statement).bindparams(sa.bindparam("t0", type_=UTCDateTime()))
                conn.execute(typed, {"t0": T0})
        assert schema_revision(engine) == "0001"
        migrate(engine)
        assert schema_revision(engine) == head_revision()
        with engine.begin() as conn:
            found = status.summary(conn, 1)
            assert found is not None
            assert (found.dag_id, found.task_instances) == ("old", {"success": 1, "failed": 1})
            rows = list(status.task_rows(conn, 1))
            assert [(r.task_id, r.state.value, r.result) for r in rows] == [
                ("extract", "success", None),
                ("load", "failed", None),
            ]
            # A result from before the upgrade is simply absent: the TI reads as None.
            [up] = results.upstream(conn, 2, "extract")
            assert (up.map_index, up.state, up.value) == (-1, TIState.SUCCESS, None)
            assert results.read_value([up], mapped=False).value is None
            # 0006: the old TIs are not mapped; a mapped task's TIs fit beside them.
            key = conn.execute(sa.select(ti.c.id, ti.c.map_index).order_by(ti.c.id)).all()
            assert [tuple(r) for r in key] == [(1, -1), (2, -1)]
            conn.execute(
                sa.insert(ti),
                [{**_MAPPED, "id": 3 + i, "map_index": i, "updated_at": T0} for i in (0, 1)],
            )
            with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(sa.insert(ti), {**_MAPPED, "id": 5, "map_index": 1, "updated_at": T0})
            # The journal trigger survived SQLite's table rebuild; foreign keys hold.
            conn.execute(sa.update(ti).where(ti.c.id == 2).values(state="none", updated_by="test"))
            moved = conn.execute(
                sa.select(ti_transitions.c.from_state, ti_transitions.c.to_state).where(
                    ti_transitions.c.task_instance_id == 2
                )
            ).all()
            assert [tuple(r) for r in moved] == [("failed", "none")]
            with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(
                    sa.insert(ti), {**_MAPPED, "id": 6, "dag_run_id": 99, "updated_at": T0}
                )
    finally:
        engine.dispose()
