"""Per-try logs, refused writes, and the last pass's report of a backfill.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

- `ti_logs`: a TI try's log (stdout, stderr and `logging` records of its
  callable), in chunks a worker appends while the try runs, so every host
  reads it through the metadata DB and `backfill logs --follow` streams it.
  `start_byte` is the chunk's offset in the try's whole log: a worker over
  `BACKFILL_LOG_MAX_BYTES` deletes the oldest chunks, and the first kept
  chunk's offset says how much was cut.
- `refused_writes`: one row each time the fence refused a worker (a delivery
  that lost the claim race, a heartbeat or an outcome of a try whose claim was
  lost), for metrics and audits: the database is the only witness all hosts share.
- `backfills.report`: what the last coordinator pass decided (why TIs wait,
  fail or deadlock), so `status` tells a daemon-driven backfill's story.
Frozen history: the kind list is a literal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL_KINDS = "'claim', 'heartbeat', 'finish'"


def _at() -> sa.Column[sa.DateTime]:
    return sa.Column("at", sa.DateTime(timezone=True), nullable=False)


def _ti_key() -> list[sa.Column[sa.Integer]]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_instance_id", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "ti_logs",
        *_ti_key(),
        sa.Column("start_byte", sa.BigInteger(), nullable=False),
        _at(),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ti_logs")),
        sa.ForeignKeyConstraint(
            ["task_instance_id"],
            ["task_instances.id"],
            name=op.f("fk_ti_logs_task_instance_id_task_instances"),
        ),
    )
    op.create_index(
        op.f("ix_ti_logs_task_instance_id_try_number_start_byte"),
        "ti_logs",
        ["task_instance_id", "try_number", "start_byte"],
    )
    op.create_table(
        "refused_writes",
        *_ti_key(),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("claimant", sa.String(length=250), nullable=False),
        _at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refused_writes")),
        sa.CheckConstraint(f"kind IN ({REFUSAL_KINDS})", name=op.f("ck_refused_writes_kind_valid")),
        sa.ForeignKeyConstraint(
            ["task_instance_id"],
            ["task_instances.id"],
            name=op.f("fk_refused_writes_task_instance_id_task_instances"),
        ),
    )
    op.create_index(
        op.f("ix_refused_writes_task_instance_id"), "refused_writes", ["task_instance_id"]
    )
    # A plain ALTER TABLE on both dialects: batch mode would rebuild the SQLite table
    # and drop its journal trigger (0003).
    op.add_column("backfills", sa.Column("report", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("backfills", "report")
    op.drop_table("refused_writes")
    op.drop_table("ti_logs")
