"""Upgrading a database in place: one populated at revision 0001 migrates to the head, its
rows kept, and every read and write of today works on it (each backend)."""

from __future__ import annotations

import pendulum
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from backfill.store import results, status
from backfill.store.db import (
    alembic_config,
    create_engine_for,
    head_revision,
    migrate,
    schema_revision,
)
from backfill.store.schema import UTCDateTime

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
            up = results.upstream(conn, 2, "extract")
            assert (up.found, up.value) == (True, None)
    finally:
        engine.dispose()
