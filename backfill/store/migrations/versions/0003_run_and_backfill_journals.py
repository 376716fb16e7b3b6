"""Journals of DAG-run and backfill state changes, beside the TI journal.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

`run_transitions` and `backfill_transitions` get one row per change of
`dag_runs.state` / `backfills.state`, written by a trigger in the changing
statement's transaction, as `ti_transitions` does for TIs (0001). Separate
tables, so the TI trigger, on the hot path of every try, is untouched; these
triggers do not NOTIFY (nothing waits on a run or a backfill changing).
Frozen history: the state lists and trigger bodies are literals.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_STATES = "'queued', 'running', 'success', 'failed'"
BACKFILL_STATES = "'queued', 'running', 'paused', 'success', 'failed', 'cancelled'"

# (journal table, journaled table, its key column in the journal, the states)
JOURNALS = (
    ("run_transitions", "dag_runs", "dag_run_id", RUN_STATES),
    ("backfill_transitions", "backfills", "backfill_id", BACKFILL_STATES),
)


def _triggers(journal: str, table: str, key: str, dialect: str) -> tuple[str, ...]:
    name = f"{journal}_write"
    insert = f"""INSERT INTO {journal} ({key}, from_state, to_state, at)
                VALUES (NEW.id, OLD.state, NEW.state, NEW.updated_at);"""
    if dialect == "postgresql":
        return (
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {insert}
                RETURN NULL;
            END $$
            """,
            f"""
            CREATE TRIGGER {name} AFTER UPDATE OF state ON {table}
            FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
            EXECUTE FUNCTION {name}()
            """,
        )
    return (
        f"""
        CREATE TRIGGER {name} AFTER UPDATE OF state ON {table}
        WHEN NEW.state IS NOT OLD.state
        BEGIN
            {insert}
        END
        """,
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for journal, table, key, states in JOURNALS:
        op.create_table(
            journal,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column(key, sa.Integer(), nullable=False),
            sa.Column("from_state", sa.String(length=20), nullable=False),
            sa.Column("to_state", sa.String(length=20), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{journal}")),
            sa.CheckConstraint(
                f"from_state IN ({states})", name=op.f(f"ck_{journal}_from_state_valid")
            ),
            sa.CheckConstraint(
                f"to_state IN ({states})", name=op.f(f"ck_{journal}_to_state_valid")
            ),
            sa.ForeignKeyConstraint(
                [key], [f"{table}.id"], name=op.f(f"fk_{journal}_{key}_{table}")
            ),
        )
        op.create_index(op.f(f"ix_{journal}_{key}"), journal, [key])
        for statement in _triggers(journal, table, key, dialect):
            op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for journal, table, _, _ in reversed(JOURNALS):
        name = f"{journal}_write"
        if postgresql:
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION {name}()")
        else:
            op.execute(f"DROP TRIGGER {name}")
        op.drop_table(journal)
