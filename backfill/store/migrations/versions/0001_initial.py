"""The initial schema: backfills, dag_runs, task_instances, pools, ti_transitions.

Revision ID: 0001
Revises:
Create Date: 2024-11-22

Frozen history: the state lists are literals, not read from backfill.model.states,
so this revision never changes; tests/store/test_schema.py proves that the migrated
database matches backfill/store/schema.py and the enums.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TI_STATES = (
    "'none', 'scheduled', 'queued', 'running', 'success', 'failed', 'skipped', "
    "'up_for_retry', 'up_for_reschedule', 'upstream_failed', 'removed'"
)
RUN_STATES = "'queued', 'running', 'success', 'failed'"
BACKFILL_STATES = "'queued', 'running', 'paused', 'success', 'failed', 'cancelled'"
DEFAULT_POOL_SLOTS = 128

# One journal row per TI state change, written in the changing statement's
# transaction; on PostgreSQL a finished try also wakes the coordinators.
JOURNAL_TRIGGER = {
    "postgresql": (
        """
        CREATE FUNCTION ti_journal() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state IS DISTINCT FROM OLD.state THEN
                INSERT INTO ti_transitions
                    (task_instance_id, from_state, to_state, try_number, actor, at)
                VALUES (NEW.id, OLD.state, NEW.state, NEW.try_number,
                        COALESCE(NEW.updated_by, 'unknown'), NEW.updated_at);
                IF OLD.state = 'running' THEN
                    PERFORM pg_notify('backfill_events', NEW.dag_id);
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


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("dag_fingerprint", sa.String(64), nullable=False),
        sa.Column("start", _utc(), nullable=False),
        sa.Column("end", _utc(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("conf", sa.JSON(), nullable=False),
        sa.Column("lease_owner", sa.String(250), nullable=True),
        sa.Column("lease_epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_expires_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfills")),
        sa.CheckConstraint(f"state IN ({BACKFILL_STATES})", name=op.f("ck_backfills_state_valid")),
    )
    op.create_index(op.f("ix_backfills_dag_id_state"), "backfills", ["dag_id", "state"])

    op.create_table(
        "pools",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pools")),
        sa.CheckConstraint("slots >= -1", name=op.f("ck_pools_slots_valid")),
    )

    op.create_table(
        "dag_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("logical_date", _utc(), nullable=False),
        sa.Column("data_interval_start", _utc(), nullable=False),
        sa.Column("data_interval_end", _utc(), nullable=False),
        sa.Column("backfill_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("conf", sa.JSON(), nullable=False),
        sa.Column("start_date", _utc(), nullable=True),
        sa.Column("end_date", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_runs")),
        sa.CheckConstraint(f"state IN ({RUN_STATES})", name=op.f("ck_dag_runs_state_valid")),
        sa.UniqueConstraint("dag_id", "logical_date", name=op.f("uq_dag_runs_dag_id_logical_date")),
        sa.UniqueConstraint("dag_id", "run_id", name=op.f("uq_dag_runs_dag_id_run_id")),
        sa.ForeignKeyConstraint(
            ["backfill_id"], ["backfills.id"], name=op.f("fk_dag_runs_backfill_id_backfills")
        ),
    )
    op.create_index(op.f("ix_dag_runs_backfill_id_state"), "dag_runs", ["backfill_id", "state"])

    op.create_table(
        "task_instances",
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instances")),
        sa.CheckConstraint(f"state IN ({TI_STATES})", name=op.f("ck_task_instances_state_valid")),
        sa.CheckConstraint(
            "try_number >= 0", name=op.f("ck_task_instances_try_number_non_negative")
        ),
        sa.CheckConstraint("pool_slots >= 1", name=op.f("ck_task_instances_pool_slots_positive")),
        sa.UniqueConstraint(
            "dag_run_id", "task_id", name=op.f("uq_task_instances_dag_run_id_task_id")
        ),
        sa.ForeignKeyConstraint(
            ["dag_run_id"], ["dag_runs.id"], name=op.f("fk_task_instances_dag_run_id_dag_runs")
        ),
    )
    op.create_index(op.f("ix_task_instances_state_pool"), "task_instances", ["state", "pool"])
    op.create_index(
        op.f("ix_task_instances_dag_id_task_id_state"),
        "task_instances",
        ["dag_id", "task_id", "state"],
    )

    op.create_table(
        "ti_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=False),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(250), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ti_transitions")),
        sa.CheckConstraint(
            f"from_state IN ({TI_STATES})", name=op.f("ck_ti_transitions_from_state_valid")
        ),
        sa.CheckConstraint(
            f"to_state IN ({TI_STATES})", name=op.f("ck_ti_transitions_to_state_valid")
        ),
        sa.ForeignKeyConstraint(
            ["task_instance_id"],
            ["task_instances.id"],
            name=op.f("fk_ti_transitions_task_instance_id_task_instances"),
        ),
    )
    op.create_index(
        op.f("ix_ti_transitions_task_instance_id"), "ti_transitions", ["task_instance_id"]
    )

    for statement in JOURNAL_TRIGGER[op.get_bind().dialect.name]:
        op.execute(statement)

    pools = sa.table(
        "pools", sa.column("name", sa.String), sa.column("slots"), sa.column("description")
    )
    op.bulk_insert(
        pools,
        [{"name": "default_pool", "slots": DEFAULT_POOL_SLOTS, "description": "Default pool"}],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ti_journal ON task_instances")
        op.execute("DROP FUNCTION ti_journal()")
    else:
        op.execute("DROP TRIGGER ti_journal")
    op.drop_table("ti_transitions")
    op.drop_table("task_instances")
    op.drop_table("dag_runs")
    op.drop_table("pools")
    op.drop_table("backfills")
