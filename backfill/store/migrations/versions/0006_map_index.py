"""Dynamic task mapping: `task_instances.map_index`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

- `map_index`: which element of a mapped task (`task.expand(...)`) a TI runs;
  -1 for a task that is not mapped, and for a mapped task's placeholder until
  its TIs are made. Every existing TI gets -1: it stays what it was.
- The TI key becomes `(dag_run_id, task_id, map_index)`.

PostgreSQL changes the table in place. SQLite cannot drop a UNIQUE constraint,
so the table is rebuilt by SQLite's own recipe (create, copy, drop, rename),
with its two partial indexes and its journal trigger made again: `db.migrate`
runs SQLite migrations with foreign keys off and checks them before commit.
Frozen history: every definition below is a literal, never read from the schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TI_STATES = (
    "'none', 'scheduled', 'queued', 'running', 'success', 'failed', 'skipped', "
    "'up_for_retry', 'up_for_reschedule', 'upstream_failed', 'removed'"
)
ACTIVE = "state IN ('queued', 'running')"
FAILED = "state IN ('failed', 'upstream_failed')"
SQLITE_JOURNAL_TRIGGER = """
    CREATE TRIGGER ti_journal AFTER UPDATE OF state ON task_instances
    WHEN NEW.state IS NOT OLD.state
    BEGIN
        INSERT INTO ti_transitions
            (task_instance_id, from_state, to_state, try_number, actor, at)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.try_number,
                COALESCE(NEW.updated_by, 'unknown'), NEW.updated_at);
    END
"""
OLD_KEY = ("dag_run_id", "task_id")
NEW_KEY = ("dag_run_id", "task_id", "map_index")
# Every column of task_instances at 0005 but map_index, in order (the SQLite copy).
COLUMNS = (
    "id, dag_run_id, dag_id, task_id, state, try_number, max_tries, pool, pool_slots, queue, "
    "priority_weight, claim_token, claimant, hostname, heartbeat_at, queued_at, start_date, "
    "end_date, next_try_at, last_error, updated_at, updated_by"
)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _unique(key: tuple[str, ...]) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*key, name=op.f("uq_task_instances_" + "_".join(key)))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "task_instances",
            sa.Column("map_index", sa.Integer(), server_default="-1", nullable=False),
        )
        op.drop_constraint(op.f("uq_task_instances_dag_run_id_task_id"), "task_instances")
        op.create_unique_constraint(
            op.f("uq_task_instances_dag_run_id_task_id_map_index"), "task_instances", NEW_KEY
        )
    else:
        _rebuild_sqlite(NEW_KEY, copied=f"{COLUMNS}, -1", into=f"{COLUMNS}, map_index")


def downgrade() -> None:
    mapped = op.get_bind().execute(
        sa.text("SELECT count(*) FROM task_instances WHERE map_index >= 0")
    )
    if mapped.scalar_one():
        raise RuntimeError(
            "cannot downgrade below 0006: mapped task instances (map_index >= 0) exist, and "
            "the older key (dag_run_id, task_id) cannot hold them"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("uq_task_instances_dag_run_id_task_id_map_index"), "task_instances")
        op.create_unique_constraint(
            op.f("uq_task_instances_dag_run_id_task_id"), "task_instances", OLD_KEY
        )
        op.drop_column("task_instances", "map_index")
    else:
        _rebuild_sqlite(OLD_KEY, copied=COLUMNS, into=COLUMNS)


def _rebuild_sqlite(key: tuple[str, ...], *, copied: str, into: str) -> None:
    """task_instances again, keyed on `key`, with `map_index` iff the key has it."""
    mapped = "map_index" in key
    op.create_table("task_instances_0006", *_columns(mapped), *_constraints(key))
    op.execute(f"INSERT INTO task_instances_0006 ({into}) SELECT {copied} FROM task_instances")
    op.execute("DROP TABLE task_instances")  # its indexes and trigger go with it
    op.execute("ALTER TABLE task_instances_0006 RENAME TO task_instances")
    for name, columns, where in (
        ("ix_task_instances_active", ["pool", "dag_id", "task_id"], ACTIVE),
        ("ix_task_instances_failed", ["dag_run_id"], FAILED),
    ):
        op.create_index(name, "task_instances", columns, sqlite_where=sa.text(where))
    op.execute(SQLITE_JOURNAL_TRIGGER)


def _columns(mapped: bool) -> list[sa.Column[object]]:
    index = [sa.Column("map_index", sa.Integer(), server_default="-1", nullable=False)]
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_run_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("state", sa.String(20), server_default="none", nullable=False),
        sa.Column("try_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pool", sa.String(250), nullable=False),
        sa.Column("pool_slots", sa.Integer(), server_default="1", nullable=False),
        sa.Column("queue", sa.String(250), nullable=False),
        sa.Column("priority_weight", sa.Integer(), server_default="1", nullable=False),
        sa.Column("claim_token", sa.String(64), nullable=True),
        sa.Column("claimant", sa.String(250), nullable=True),
        sa.Column("hostname", sa.String(250), nullable=True),
        sa.Column("heartbeat_at", _utc(), nullable=True),
        sa.Column("queued_at", _utc(), nullable=True),
        sa.Column("start_date", _utc(), nullable=True),
        sa.Column("end_date", _utc(), nullable=True),
        sa.Column("next_try_at", _utc(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("updated_by", sa.String(250), nullable=True),
        *(index if mapped else []),
    ]


def _constraints(key: tuple[str, ...]) -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instances")),
        sa.CheckConstraint(f"state IN ({TI_STATES})", name=op.f("ck_task_instances_state_valid")),
        sa.CheckConstraint(
            "try_number >= 0", name=op.f("ck_task_instances_try_number_non_negative")
        ),
        sa.CheckConstraint("pool_slots >= 1", name=op.f("ck_task_instances_pool_slots_positive")),
        _unique(key),
        sa.ForeignKeyConstraint(
            ["dag_run_id"], ["dag_runs.id"], name=op.f("fk_task_instances_dag_run_id_dag_runs")
        ),
    ]
