"""Reading a task instance back from a test's database: its whole row and its journal.

- `row_of(bind, ti_id)`: every column of the TI, as a dict;
- `journal(bind, ti_id, *columns)`: its journal rows, oldest first;
- `every_row(bind)`: every row of every table of the schema: what a refused
  request must leave exactly as it was.

Plain SQLAlchemy Core against the schema tables (a test checks what the
product wrote, not what its own readers report), on an engine or on a
connection the test already holds, inside its transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from backfill.store.schema import metadata, task_instances, ti_transitions


def row_of(bind: Engine | Connection, ti_id: int) -> dict[str, Any]:
    """Every column of one TI: to prove a row unchanged, not just its state."""
    stmt = sa.select(task_instances).where(task_instances.c.id == ti_id)
    return dict(_read(bind, stmt)[0]._mapping)


def journal(bind: Engine | Connection, ti_id: int, *columns: str) -> list[Any]:
    """The journal of one TI, oldest first: whole rows, or tuples of `columns`."""
    table = ti_transitions
    wanted = [table.c[name] for name in columns] or [table]
    stmt = sa.select(*wanted).where(table.c.task_instance_id == ti_id).order_by(table.c.id)
    rows = _read(bind, stmt)
    return [tuple(row) for row in rows] if columns else rows


def every_row(bind: Engine | Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, by table, in key order: equal before and after a request
    means it wrote nothing (the tables of a test's database are small)."""
    return {
        table.name: [
            tuple(row) for row in _read(bind, sa.select(table).order_by(*table.primary_key))
        ]
        for table in metadata.sorted_tables
    }


def _read(bind: Engine | Connection, stmt: sa.Select[Any]) -> list[sa.Row[Any]]:
    if isinstance(bind, Connection):
        return list(bind.execute(stmt))
    with bind.connect() as conn:
        return list(conn.execute(stmt))
