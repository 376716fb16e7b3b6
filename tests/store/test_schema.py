"""The enums, the transition table, schema.py and the migrated database agree.

Every test that touches a database runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine
from support.rows import journal

from backfill.model.states import (
    BACKFILL_TRANSITIONS,
    RUN_TRANSITIONS,
    TRANSITIONS,
    BackfillState,
    RunState,
    TIState,
    source,
    sources_of,
    transitions_of,
)
from backfill.store import schema
from backfill.store.db import (
    alembic_config,
    create_engine_for,
    head_revision,
    migrate,
    schema_revision,
)
from backfill.store.journal import IllegalTransition, illegal_transitions

T0 = datetime(2024, 1, 1, tzinfo=UTC)


# -- row factories: the smallest valid row of each table, with overrides --------


def _backfill(conn: Connection, **values: Any) -> int:
    row = {
        "dag_id": "d",
        "dag_fingerprint": "f" * 64,
        "start": T0,
        "end": T0,
        "state": BackfillState.QUEUED,
        "options": {},
        "conf": {},
        "created_at": T0,
        "updated_at": T0,
    }
    return _insert(conn, schema.backfills, row | values)


def _dag_run(conn: Connection, **values: Any) -> int:
    dag_id = f"d_{uuid.uuid4().hex[:8]}"  # fresh, so (dag_id, logical_date) is unique
    row = {
        "dag_id": dag_id,
        "run_id": f"backfill__{T0.isoformat()}",
        "logical_date": T0,
        "data_interval_start": T0,
        "data_interval_end": T0 + timedelta(days=1),
        "state": RunState.QUEUED,
        "conf": {},
        "created_at": T0,
        "updated_at": T0,
    }
    return _insert(conn, schema.dag_runs, row | values)


def _task_instance(conn: Connection, **values: Any) -> int:
    row = {
        "dag_run_id": values.pop("dag_run_id", None) or _dag_run(conn),
        "dag_id": "d",
        "task_id": f"t_{uuid.uuid4().hex[:8]}",
        "pool": "default_pool",
        "queue": "default",
        "updated_at": T0,
    }
    return _insert(conn, schema.task_instances, row | values)


def _transition(conn: Connection, **values: Any) -> int:
    row = {
        "task_instance_id": _task_instance(conn),
        "from_state": TIState.NONE,
        "to_state": TIState.SCHEDULED,
        "try_number": 0,
        "actor": "coordinator:1",
        "at": T0,
    }
    return _insert(conn, schema.ti_transitions, row | values)


def _run_transition(conn: Connection, **values: Any) -> int:
    row = {"dag_run_id": _dag_run(conn), "from_state": "queued", "to_state": "running", "at": T0}
    return _insert(conn, schema.run_transitions, row | values)


def _backfill_transition(conn: Connection, **values: Any) -> int:
    row = {"backfill_id": _backfill(conn), "from_state": "queued", "to_state": "running", "at": T0}
    return _insert(conn, schema.backfill_transitions, row | values)


def _insert(conn: Connection, table: sa.Table, row: dict[str, Any]) -> int:
    return int(conn.execute(table.insert().values(row).returning(table.c.id)).scalar_one())


STATE_COLUMNS: list[tuple[str, str, type[enum.StrEnum], Any]] = [
    ("backfills", "state", BackfillState, _backfill),
    ("dag_runs", "state", RunState, _dag_run),
    ("task_instances", "state", TIState, _task_instance),
    ("ti_transitions", "from_state", TIState, _transition),
    ("ti_transitions", "to_state", TIState, _transition),
    ("run_transitions", "from_state", RunState, _run_transition),
    ("run_transitions", "to_state", RunState, _run_transition),
    ("backfill_transitions", "from_state", BackfillState, _backfill_transition),
    ("backfill_transitions", "to_state", BackfillState, _backfill_transition),
]
STATE_IDS = [f"{table}.{column}" for table, column, _, _ in STATE_COLUMNS]


# -- (a) enum, transition table and CHECK constraints agree ---------------------


@pytest.mark.parametrize("kind", [TIState, RunState, BackfillState])
def test_transition_table_covers_exactly_the_states(kind: type[Any]) -> None:
    table = transitions_of(kind)
    assert set(table) == set(kind)
    for src, targets in table.items():
        assert targets <= set(kind), src
        assert src not in targets, f"{src} -> itself is not a transition"
    # No dead state: each one can be reached from some other state (a backfill's
    # `queued` only by creation: nothing ever sends one back to it).
    unreachable = {state for state in kind if not sources_of(state)}
    assert unreachable == ({BackfillState.QUEUED} if kind is BackfillState else set())


def test_each_kind_has_its_own_table() -> None:
    assert transitions_of(TIState) is TRANSITIONS
    assert transitions_of(RunState) is RUN_TRANSITIONS
    assert transitions_of(BackfillState) is BACKFILL_TRANSITIONS
    # The same value names different states in different tables.
    assert sources_of(TIState.QUEUED) != sources_of(RunState.QUEUED)
    assert sources_of(RunState.QUEUED) == {RunState.SUCCESS, RunState.FAILED}


@pytest.mark.parametrize(("table", "column", "states", "factory"), STATE_COLUMNS, ids=STATE_IDS)
def test_db_accepts_every_state_and_rejects_others(
    engine: Engine, table: str, column: str, states: type[enum.StrEnum], factory: Any
) -> None:
    with engine.connect() as conn:
        for state in states:
            factory(conn, **{column: state.value})
        stored = conn.execute(sa.select(schema.metadata.tables[table].c[column])).scalars()
        assert {state.value for state in states} <= set(stored)
        # Unwritten: the journal rows made here are no transitions (a final state as
        # `from_state`), and the check after every test would refuse them.
        conn.rollback()
    with (
        engine.begin() as conn,
        pytest.raises(sa.exc.IntegrityError, match=f"ck_{table}_{column}_valid"),
    ):
        factory(conn, **{column: "bogus"})


@pytest.mark.parametrize(("table", "column", "states", "factory"), STATE_COLUMNS, ids=STATE_IDS)
def test_db_check_lists_exactly_the_enum_values(
    engine: Engine, table: str, column: str, states: type[enum.StrEnum], factory: Any
) -> None:
    checks = {c["name"]: c["sqltext"] for c in sa.inspect(engine).get_check_constraints(table)}
    values = re.findall(r"'([^']*)'", checks[f"ck_{table}_{column}_valid"])
    assert sorted(values) == sorted(state.value for state in states)


# -- (b) the migration creates exactly what schema.py declares ------------------


def _compare_default(
    _context: Any,
    _inspected: Any,
    _metadata: Any,
    inspected: str | None,
    _default: Any,
    rendered: str | None,
) -> bool:
    # Alembic's SQLite comparator reports `''` vs `('')` as a change; compare
    # the literal itself: strip parentheses, `::type` casts and quotes.
    return _literal(inspected) != _literal(rendered)


def _literal(sql: str | None) -> str | None:
    if sql is None:
        return None
    text = sql.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    text = re.sub(r"::[a-z ]+$", "", text)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def _diff(engine: Engine, metadata: sa.MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": _compare_default}
        )
        return list(compare_metadata(context, metadata))


def test_migration_matches_schema_module(engine: Engine) -> None:
    assert _diff(engine, schema.metadata) == []


def test_schema_comparison_is_not_blind(engine: Engine) -> None:
    altered = sa.MetaData(naming_convention=schema.metadata.naming_convention)
    for table in schema.metadata.tables.values():
        table.to_metadata(altered)
    ti = altered.tables["task_instances"]
    ti.c.state.type = sa.String(30)
    ti.c.try_number.server_default = sa.DefaultClause("1")
    sa.Index("ix_extra", ti.c.queue)
    kinds = {_kind(change) for change in _diff(engine, altered)}
    assert kinds == {"modify_type", "modify_default", "add_index"}


def _kind(change: Any) -> str:
    # compare_metadata yields a tuple per change, or a list of tuples per column.
    return str(change[0][0] if isinstance(change, list) else change[0])


def test_migration_matches_create_all(engine: Engine, empty_db_url: str) -> None:
    # Autogenerate ignores CHECK constraints: compare the reflected migrated
    # database with one built by create_all, as the same backend renders both.
    twin = create_engine_for(empty_db_url)
    try:
        schema.metadata.create_all(twin)
        assert _reflect(engine) == _reflect(twin)
    finally:
        twin.dispose()


def _reflect(engine: Engine) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    assert tables == set(schema.metadata.tables)
    return {
        table: {
            "columns": [
                (c["name"], repr(c["type"]), c["nullable"], c["default"])
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(
                (
                    fk["name"],
                    fk["constrained_columns"],
                    fk["referred_table"],
                    fk["referred_columns"],
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "uniques": sorted(
                (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], i["column_names"], i["unique"], _predicate(i))
                for i in inspector.get_indexes(table)
            ),
            "checks": sorted(
                (c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)
            ),
        }
        for table in sorted(tables)
    }


def _predicate(index: Any) -> str | None:
    """A partial index's WHERE, as the backend renders it (None: a full index)."""
    options = index.get("dialect_options", {})
    where = options.get("postgresql_where") or options.get("sqlite_where")
    return None if where is None else str(where)  # SQLite reflects a TextClause


# -- (c) migrate is idempotent and seeds the default pool -----------------------


def _pools(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        query = sa.select(schema.pools.c.name, schema.pools.c.slots)
        return [(row.name, row.slots) for row in conn.execute(query)]


def test_migrate_from_nothing_is_idempotent(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        assert schema_revision(engine) is None
        migrate(engine)
        migrate(engine)
        assert schema_revision(engine) == head_revision()
        assert _pools(engine) == [("default_pool", schema.DEFAULT_POOL_SLOTS)]
        assert schema.DEFAULT_POOL_SLOTS == 128
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_everything_and_upgrade_restores(engine: Engine) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    assert schema_revision(engine) is None
    migrate(engine)
    assert _diff(engine, schema.metadata) == []
    assert _pools(engine) == [("default_pool", 128)]


# -- (d) UTCDateTime ------------------------------------------------------------

_moments = sa.Table(
    "test_moments",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", schema.UTCDateTime),
)


def test_utc_datetime_round_trips_aware_values(engine: Engine, backend: str) -> None:
    kolkata = datetime(2024, 3, 31, 1, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Kolkata"))
    paris_dst = datetime(2024, 3, 31, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))  # just after DST
    fixed = datetime(2023, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    values = [kolkata, paris_dst, fixed, None]
    _moments.create(engine)
    with engine.begin() as conn:
        if backend == "postgresql":  # the session time zone must not matter
            conn.exec_driver_sql("SET TIME ZONE 'America/New_York'")
        conn.execute(_moments.insert(), [{"id": i, "at": v} for i, v in enumerate(values)])
        loaded = conn.execute(sa.select(_moments.c.at).order_by(_moments.c.id)).scalars().all()
        later = conn.execute(
            sa.select(_moments.c.id).where(_moments.c.at > datetime(2024, 3, 30, 21, tzinfo=UTC))
        ).scalars()
        assert set(later) == {1}  # 20:00Z (Kolkata) and 01:30Z (Paris) vs 21:00Z
    assert loaded == values
    assert all(v.utcoffset() == timedelta(0) for v in loaded if v is not None)


def test_utc_datetime_refuses_naive_values(engine: Engine) -> None:
    _moments.create(engine)
    with engine.begin() as conn, pytest.raises(sa.exc.StatementError, match="naive datetime"):
        conn.execute(_moments.insert(), {"id": 1, "at": datetime(2024, 1, 1)})


# -- (e) one DAG run per (dag_id, logical_date) ---------------------------------


def test_one_dag_run_per_dag_and_logical_date(engine: Engine) -> None:
    with engine.begin() as conn:
        _dag_run(conn, dag_id="d", run_id="first", logical_date=T0)
        _dag_run(conn, dag_id="d", run_id="next_day", logical_date=T0 + timedelta(days=1))
        _dag_run(conn, dag_id="other", run_id="first", logical_date=T0)
    # The same instant written in another offset is the same logical date.
    same_instant = T0.astimezone(timezone(timedelta(hours=2)))
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        _dag_run(conn, dag_id="d", run_id="second", logical_date=same_instant)


@pytest.mark.parametrize("created_by", ["migration", "create_all"])
def test_every_state_change_is_journaled_by_the_trigger(
    engine: Engine, empty_db_url: str, created_by: str
) -> None:
    if created_by == "create_all":
        engine = create_engine_for(empty_db_url)
        schema.metadata.create_all(engine)
    ti = schema.task_instances
    with engine.begin() as conn:
        ti_id = _task_instance(conn)
        for state, try_number, actor in [
            (TIState.QUEUED, 1, "coordinator:a"),
            (TIState.RUNNING, 1, "worker:h:1"),
            (TIState.RUNNING, 1, "worker:h:1"),  # a heartbeat-like write: no state change
            (TIState.SUCCESS, 1, "worker:h:1"),
        ]:
            conn.execute(
                ti.update()
                .where(ti.c.id == ti_id)
                .values(state=state, try_number=try_number, updated_by=actor, updated_at=T0)
            )
        assert journal(conn, ti_id, "from_state", "to_state", "try_number", "actor") == [
            ("none", "queued", 1, "coordinator:a"),
            ("queued", "running", 1, "worker:h:1"),
            ("running", "success", 1, "worker:h:1"),
        ]
    with engine.connect() as conn:
        conn.execute(ti.update().where(ti.c.id == ti_id).values(state=TIState.NONE))
        conn.rollback()  # the journal row goes with the statement's transaction
        assert len(journal(conn, ti_id, "from_state", "to_state", "try_number", "actor")) == 3
    if created_by == "create_all":
        engine.dispose()


@pytest.mark.parametrize("created_by", ["migration", "create_all"])
def test_run_and_backfill_state_changes_are_journaled_by_their_triggers(
    engine: Engine, empty_db_url: str, created_by: str
) -> None:
    if created_by == "create_all":
        engine = create_engine_for(empty_db_url)
        schema.metadata.create_all(engine)
    bf, run = schema.backfills, schema.dag_runs
    later = T0 + timedelta(minutes=1)
    with engine.begin() as conn:
        bid = _backfill(conn)
        run_id = _dag_run(conn, backfill_id=bid)
        for state in [BackfillState.RUNNING, BackfillState.RUNNING, BackfillState.CANCELLED]:
            conn.execute(bf.update().where(bf.c.id == bid).values(state=state, updated_at=later))
        for state in [RunState.RUNNING, RunState.FAILED]:
            conn.execute(
                run.update().where(run.c.id == run_id).values(state=state, updated_at=later)
            )
        conn.execute(run.update().where(run.c.id == run_id).values(conf={"no": "change"}))
        bj, rj = schema.backfill_transitions, schema.run_transitions
        assert conn.execute(
            sa.select(bj.c.backfill_id, bj.c.from_state, bj.c.to_state, bj.c.at).order_by(bj.c.id)
        ).all() == [(bid, "queued", "running", later), (bid, "running", "cancelled", later)]
        assert conn.execute(
            sa.select(rj.c.dag_run_id, rj.c.from_state, rj.c.to_state).order_by(rj.c.id)
        ).all() == [(run_id, "queued", "running"), (run_id, "running", "failed")]
    if created_by == "create_all":
        engine.dispose()


def test_the_journal_check_reports_transitions_missing_from_their_tables(
    engine: Engine,
) -> None:
    """What the root conftest runs after every test, shown to fail: raw SQL moves a TI,
    a run and a backfill along transitions their tables do not list."""
    ti, run, bf = schema.task_instances, schema.dag_runs, schema.backfills
    with engine.connect() as conn:
        ti_id = _task_instance(conn)
        bid = _backfill(conn)
        legal = [
            ti.update().where(ti.c.id == ti_id).values(state=TIState.QUEUED),
            bf.update().where(bf.c.id == bid).values(state=BackfillState.RUNNING),
        ]
        for stmt in legal:
            conn.execute(stmt)
        assert illegal_transitions(conn) == []
        run_id = conn.execute(sa.select(ti.c.dag_run_id).where(ti.c.id == ti_id)).scalar_one()
        illegal = [
            ti.update().where(ti.c.id == ti_id).values(state=TIState.SUCCESS),
            run.update().where(run.c.id == run_id).values(state=RunState.SUCCESS),
            bf.update().where(bf.c.id == bid).values(state=BackfillState.QUEUED),
        ]
        for stmt in illegal:
            conn.execute(stmt)
        assert illegal_transitions(conn) == [
            IllegalTransition("backfill_transitions", "running", "queued"),
            IllegalTransition("run_transitions", "queued", "success"),
            IllegalTransition("ti_transitions", "queued", "success"),
        ]
        conn.rollback()  # the database the test leaves behind passes the check


def test_a_statement_names_its_source_state_through_the_table() -> None:
    """`source` is how a statement moving TIs out of one state names it: checked against
    TRANSITIONS when the statement is built, so a statement cannot drift from the table."""
    assert source(TIState.QUEUED, TIState.RUNNING) is TIState.QUEUED
    assert source(TIState.RUNNING, TIState.UP_FOR_RETRY, TIState.FAILED) is TIState.RUNNING
    with pytest.raises(ValueError, match="success -> running is not in TRANSITIONS"):
        source(TIState.SUCCESS, TIState.RUNNING)
    assert source(RunState.RUNNING, RunState.SUCCESS, RunState.FAILED) is RunState.RUNNING
    with pytest.raises(ValueError, match="success -> running is not in RUN_TRANSITIONS"):
        source(RunState.SUCCESS, RunState.RUNNING)
    assert source(BackfillState.PAUSED, BackfillState.RUNNING) is BackfillState.PAUSED
    with pytest.raises(ValueError, match="cancelled -> running is not in BACKFILL_TRANSITIONS"):
        source(BackfillState.CANCELLED, BackfillState.RUNNING)
