"""The metadata tables, in SQLAlchemy Core. Alembic migrations create them.

Invariants:
- every `state` column has a CHECK constraint generated from its enum in
  `backfill.model.states`, so the database refuses a state the code does not know;
- one DAG run per (dag_id, logical_date) and one TI per (run, task, map_index):
  `map_index` is -1 for a task that is not mapped, and for a mapped task's
  placeholder until its TIs are made (`store.mapping`): it becomes 0, then 1, ...;
- timestamps are stored in UTC and read back timezone-aware (`UTCDateTime`);
- `ti_transitions` is append-only and written by a trigger on
  `task_instances` (`JOURNAL_TRIGGER`), so every state change is journaled in
  its own statement's transaction whoever makes it; on PostgreSQL the same
  trigger NOTIFYs `backfill_events` when a try ends, waking coordinators;
- `run_transitions` and `backfill_transitions` journal `dag_runs.state` and
  `backfills.state` the same way (`STATE_JOURNAL_TRIGGERS`), without an actor
  (those tables record none) and without NOTIFY.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from backfill.model.states import BackfillState, RunState, TIState

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime stored in UTC; SQLite keeps no offset, so it is re-attached on load."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; attach a timezone")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def state_check(enum_cls: type[enum.StrEnum], column: str = "state") -> sa.CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum_cls)
    return sa.CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    ]


def _partial_index(name: str, columns: list[str], where: str) -> sa.Index:
    """An index of `task_instances` on the rows matching `where` only (both dialects)."""
    predicate = sa.text(where)
    return sa.Index(
        f"ix_task_instances_{name}", *columns, postgresql_where=predicate, sqlite_where=predicate
    )


backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("dag_fingerprint", sa.String(64), nullable=False),
    sa.Column("start", UTCDateTime, nullable=False),  # first logical date of the range
    sa.Column("end", UTCDateTime, nullable=False),  # last one, inclusive
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),  # the frozen run options, as JSON
    sa.Column("conf", sa.JSON, nullable=False),
    # The coordinator lease: one driver at a time; safety never depends on it.
    sa.Column("lease_owner", sa.String(250)),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", UTCDateTime),
    *_timestamps(),
    # What the last coordinator pass decided (waiting, failed, deadlocked, and why),
    # for `status`; None until a pass wrote one (migration 0004, hence last).
    sa.Column("report", sa.JSON),
    state_check(BackfillState),
    sa.Index(None, "dag_id", "state"),
)

dag_runs = sa.Table(
    "dag_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("logical_date", UTCDateTime, nullable=False),
    sa.Column("data_interval_start", UTCDateTime, nullable=False),
    sa.Column("data_interval_end", UTCDateTime, nullable=False),
    sa.Column("backfill_id", sa.Integer, sa.ForeignKey("backfills.id")),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("conf", sa.JSON, nullable=False),
    sa.Column("start_date", UTCDateTime),
    sa.Column("end_date", UTCDateTime),
    *_timestamps(),
    state_check(RunState),
    sa.UniqueConstraint("dag_id", "logical_date"),
    sa.UniqueConstraint("dag_id", "run_id"),
    sa.Index(None, "backfill_id", "state", "logical_date"),  # the next runs to start
    sa.Index(None, "dag_id", "state"),  # max_active_runs: the DAG's running runs
)

task_instances = sa.Table(
    "task_instances",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_run_id", sa.Integer, sa.ForeignKey("dag_runs.id"), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("state", sa.String(20), nullable=False, server_default=TIState.NONE.value),
    # The try a queued/running TI is on (1 for the first); 0 before its first dispatch.
    sa.Column("try_number", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pool", sa.String(250), nullable=False),
    sa.Column("pool_slots", sa.Integer, nullable=False, server_default="1"),
    sa.Column("queue", sa.String(250), nullable=False),
    sa.Column("priority_weight", sa.Integer, nullable=False, server_default="1"),
    # The claim: set atomically by the worker that won the try; every later
    # write of that try is fenced on it.
    sa.Column("claim_token", sa.String(64)),
    sa.Column("claimant", sa.String(250)),  # hostname:pid of the claiming worker
    sa.Column("hostname", sa.String(250)),
    sa.Column("heartbeat_at", UTCDateTime),
    sa.Column("queued_at", UTCDateTime),
    sa.Column("start_date", UTCDateTime),
    sa.Column("end_date", UTCDateTime),
    sa.Column("next_try_at", UTCDateTime),  # when an up_for_retry/up_for_reschedule TI is due
    sa.Column("last_error", sa.Text),  # why the last try failed, for reports
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Who made the last change; the journal trigger copies it as the actor.
    sa.Column("updated_by", sa.String(250)),
    # Which element of a mapped task (`task.expand`) the TI runs; -1: not mapped (migration
    # 0006, hence last).
    sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
    state_check(TIState),
    sa.CheckConstraint("try_number >= 0", name="try_number_non_negative"),
    sa.CheckConstraint("pool_slots >= 1", name="pool_slots_positive"),
    sa.UniqueConstraint("dag_run_id", "task_id", "map_index"),
    # Partial: their size follows the work in flight (or failed), not the work done.
    _partial_index("active", ["pool", "dag_id", "task_id"], "state IN ('queued', 'running')"),
    _partial_index("failed", ["dag_run_id"], "state IN ('failed', 'upstream_failed')"),
)

pools = sa.Table(
    "pools",
    metadata,
    sa.Column("name", sa.String(250), primary_key=True),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.CheckConstraint("slots >= -1", name="slots_valid"),  # -1: unlimited, as in Airflow
)

DEFAULT_POOL_SLOTS = 128

ti_transitions = sa.Table(
    "ti_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_instance_id", sa.Integer, sa.ForeignKey("task_instances.id"), nullable=False),
    sa.Column("from_state", sa.String(20), nullable=False),
    sa.Column("to_state", sa.String(20), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("actor", sa.String(250), nullable=False),  # coordinator:<id> / worker:<host:pid>
    sa.Column("at", UTCDateTime, nullable=False),
    state_check(TIState, "from_state"),
    state_check(TIState, "to_state"),
    sa.Index(None, "task_instance_id"),
)


class RefusalKind(enum.StrEnum):
    """What the fence refused a worker (one `refused_writes` row each)."""

    CLAIM = "claim"  # a delivery that lost the claim race, or a stale message
    HEARTBEAT = "heartbeat"  # a running try's claim was taken away (reaped, cleared, aborted)
    FINISH = "finish"  # the outcome of a try whose claim was lost, discarded


def _ti_try() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "task_instance_id", sa.Integer, sa.ForeignKey("task_instances.id"), nullable=False
        ),
        sa.Column("try_number", sa.Integer, nullable=False),
    ]


# A try's log in the chunks its worker appended (migration 0004); `start_byte` is the
# chunk's offset in the try's whole log, so the first kept chunk says how much was cut.
ti_logs = sa.Table(
    "ti_logs",
    metadata,
    *_ti_try(),
    sa.Column("start_byte", sa.BigInteger, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index(None, "task_instance_id", "try_number", "start_byte"),
)

# A try's return value, as JSON text (migration 0005): written by the try's worker,
# fenced on its claim, before its `success` outcome; visible to downstreams only while
# the TI is `success` at that try (`store.results`).
ti_results = sa.Table(
    "ti_results",
    metadata,
    *_ti_try(),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("task_instance_id", "try_number"),
)

refused_writes = sa.Table(
    "refused_writes",
    metadata,
    *_ti_try(),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("claimant", sa.String(250), nullable=False),  # hostname:pid
    sa.Column("at", UTCDateTime, nullable=False),
    sa.CheckConstraint(
        "kind IN ({})".format(", ".join(f"'{k.value}'" for k in RefusalKind)), name="kind_valid"
    ),
    sa.Index(None, "task_instance_id"),
)

# The journal trigger, per dialect. Migration 0001 carries a frozen copy; a
# test proves both write one journal row per state change.
JOURNAL_CHANNEL = "backfill_events"
JOURNAL_TRIGGER: dict[str, tuple[str, ...]] = {
    "postgresql": (
        f"""
        CREATE FUNCTION ti_journal() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state IS DISTINCT FROM OLD.state THEN
                INSERT INTO ti_transitions
                    (task_instance_id, from_state, to_state, try_number, actor, at)
                VALUES (NEW.id, OLD.state, NEW.state, NEW.try_number,
                        COALESCE(NEW.updated_by, 'unknown'), NEW.updated_at);
                IF OLD.state = 'running' THEN
                    PERFORM pg_notify('{JOURNAL_CHANNEL}', NEW.dag_id);
                END IF;
            END IF;
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER ti_journal AFTER UPDATE OF state ON task_instances
        FOR EACH ROW EXECUTE FUNCTION ti_journal()
        """,
    ),
    "sqlite": (
        """
        CREATE TRIGGER ti_journal AFTER UPDATE OF state ON task_instances
        WHEN NEW.state IS NOT OLD.state
        BEGIN
            INSERT INTO ti_transitions
                (task_instance_id, from_state, to_state, try_number, actor, at)
            VALUES (NEW.id, OLD.state, NEW.state, NEW.try_number,
                    COALESCE(NEW.updated_by, 'unknown'), NEW.updated_at);
        END
        """,
    ),
}

for _dialect, _statements in JOURNAL_TRIGGER.items():
    for _sql in _statements:
        _ddl = sa.DDL(_sql)  # type: ignore[no-untyped-call]
        sa.event.listen(ti_transitions, "after_create", _ddl.execute_if(dialect=_dialect))


def _journal_of(name: str, table: sa.Table, key: str, states: type[enum.StrEnum]) -> sa.Table:
    """The append-only journal `name` of `table`'s state changes; `key` names the row."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(key, sa.Integer, sa.ForeignKey(table.c.id), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=False),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),  # the row's updated_at
        state_check(states, "from_state"),
        state_check(states, "to_state"),
        sa.Index(None, key),
    )


# Journals of runs and backfills (migration 0003): no actor, no NOTIFY, and their own
# triggers, so the TI trigger on the hot path of every try is unchanged.
run_transitions = _journal_of("run_transitions", dag_runs, "dag_run_id", RunState)
backfill_transitions = _journal_of("backfill_transitions", backfills, "backfill_id", BackfillState)


def _state_journal_trigger(
    journal: sa.Table, table: sa.Table, key: str
) -> dict[str, tuple[str, ...]]:
    """The trigger writing one `journal` row per change of `table.state`, per dialect.
    Migration 0003 carries a frozen copy."""
    name = f"{journal.name}_write"
    insert = f"""INSERT INTO {journal.name} ({key}, from_state, to_state, at)
                VALUES (NEW.id, OLD.state, NEW.state, NEW.updated_at);"""
    return {
        "postgresql": (
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {insert}
                RETURN NULL;
            END $$
            """,
            f"""
            CREATE TRIGGER {name} AFTER UPDATE OF state ON {table.name}
            FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
            EXECUTE FUNCTION {name}()
            """,
        ),
        "sqlite": (
            f"""
            CREATE TRIGGER {name} AFTER UPDATE OF state ON {table.name}
            WHEN NEW.state IS NOT OLD.state
            BEGIN
                {insert}
            END
            """,
        ),
    }


STATE_JOURNAL_TRIGGERS: dict[sa.Table, dict[str, tuple[str, ...]]] = {
    run_transitions: _state_journal_trigger(run_transitions, dag_runs, "dag_run_id"),
    backfill_transitions: _state_journal_trigger(backfill_transitions, backfills, "backfill_id"),
}

for _journal, _triggers in STATE_JOURNAL_TRIGGERS.items():
    for _dialect, _statements in _triggers.items():
        for _sql in _statements:
            _ddl = sa.DDL(_sql)  # type: ignore[no-untyped-call]
            sa.event.listen(_journal, "after_create", _ddl.execute_if(dialect=_dialect))
