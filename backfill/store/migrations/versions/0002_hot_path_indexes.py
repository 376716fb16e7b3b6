"""Indexes for the statements of a pass, at any size of backfill.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

A pass counts the active TIs of every pool and task, looks for failed TIs of
finished runs, counts the running runs of a DAG and starts the next queued
runs of a backfill. On a year of hourly runs (440k TIs) the indexes of 0001
made each of these scan rows that only grow with finished work. Partial
indexes hold just the rows a hot statement wants (the few active or failed
TIs), so their size follows the work in flight, not the work done; and the
two indexes on `state` they replace are no longer updated by every
transition. Frozen history: the predicates are literals.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "state IN ('queued', 'running')"
FAILED = "state IN ('failed', 'upstream_failed')"


def _partial(name: str, columns: list[str], where: str) -> None:
    predicate = sa.text(where)
    op.create_index(
        name, "task_instances", columns, postgresql_where=predicate, sqlite_where=predicate
    )


def upgrade() -> None:
    op.drop_index("ix_task_instances_state_pool", table_name="task_instances")
    op.drop_index("ix_task_instances_dag_id_task_id_state", table_name="task_instances")
    _partial("ix_task_instances_active", ["pool", "dag_id", "task_id"], ACTIVE)
    _partial("ix_task_instances_failed", ["dag_run_id"], FAILED)
    op.drop_index("ix_dag_runs_backfill_id_state", table_name="dag_runs")
    op.create_index(
        "ix_dag_runs_backfill_id_state_logical_date",
        "dag_runs",
        ["backfill_id", "state", "logical_date"],
    )
    op.create_index("ix_dag_runs_dag_id_state", "dag_runs", ["dag_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_dag_runs_dag_id_state", table_name="dag_runs")
    op.drop_index("ix_dag_runs_backfill_id_state_logical_date", table_name="dag_runs")
    op.create_index("ix_dag_runs_backfill_id_state", "dag_runs", ["backfill_id", "state"])
    op.drop_index("ix_task_instances_failed", table_name="task_instances")
    op.drop_index("ix_task_instances_active", table_name="task_instances")
    op.create_index(
        "ix_task_instances_dag_id_task_id_state", "task_instances", ["dag_id", "task_id", "state"]
    )
    op.create_index("ix_task_instances_state_pool", "task_instances", ["state", "pool"])
