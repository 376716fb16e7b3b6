"""Each try's return value: `ti_results`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

- `ti_results`: a TI try's return value as JSON text, written by its worker
  (fenced on its claim) before the try's `success` outcome, at most one a try
  (`(task_instance_id, try_number)` is unique), with its size in bytes. A
  downstream reads it only while the TI is `success` at that try, so a
  cleared TI's old value is never read again.
A new table only: an existing database upgrades in place, its rows untouched.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ti_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ti_results")),
        sa.ForeignKeyConstraint(
            ["task_instance_id"],
            ["task_instances.id"],
            name=op.f("fk_ti_results_task_instance_id_task_instances"),
        ),
        sa.UniqueConstraint(
            "task_instance_id",
            "try_number",
            name=op.f("uq_ti_results_task_instance_id_try_number"),
        ),
    )


def downgrade() -> None:
    op.drop_table("ti_results")
