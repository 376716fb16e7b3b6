"""The state journals, read back against the transition tables. (store)

Every change of `task_instances.state`, `dag_runs.state` and `backfills.state`
is journaled by a trigger (`schema.JOURNAL_TRIGGER`, `STATE_JOURNAL_TRIGGERS`),
whichever statement made it. So the journals can prove, after the fact, that
no statement moved a row along a transition its table does not list: the test
suite does this for every database a test makes. ONE statement per database,
whatever the size of the journals: their distinct (from, to) pairs
(after one look at which journals the schema has).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import BACKFILL_TRANSITIONS, RUN_TRANSITIONS, TRANSITIONS
from backfill.store.schema import backfill_transitions, run_transitions, ti_transitions


def _pairs(table: Mapping[Any, frozenset[enum.StrEnum]]) -> frozenset[tuple[str, str]]:
    return frozenset((src.value, dst.value) for src, dsts in table.items() for dst in dsts)


# Each journal and the (from, to) pairs its table allows.
JOURNALS: dict[sa.Table, frozenset[tuple[str, str]]] = {
    ti_transitions: _pairs(TRANSITIONS),
    run_transitions: _pairs(RUN_TRANSITIONS),
    backfill_transitions: _pairs(BACKFILL_TRANSITIONS),
}


@dataclass(frozen=True)
class Step:
    """One journal row: a transition and who made it (the run and backfill journals
    record no actor: None)."""

    id: int
    from_state: str
    to_state: str
    actor: str | None


@dataclass(frozen=True, order=True)
class IllegalTransition:
    journal: str
    from_state: str
    to_state: str

    def __str__(self) -> str:
        return f"{self.journal}: {self.from_state} -> {self.to_state}"


def illegal_transitions(conn: Connection) -> list[IllegalTransition]:
    """The journaled (from, to) pairs their table does not list, sorted; empty: all legal.

    Journals the database lacks (a schema older than the journal, or none yet)
    are left out; what the connection's transaction can see is read.
    """
    present = set(sa.inspect(conn).get_table_names())
    pairs = [
        sa.select(
            sa.literal(table.name).label("journal"), table.c.from_state, table.c.to_state
        ).group_by(table.c.from_state, table.c.to_state)
        for table in JOURNALS
        if table.name in present
    ]
    if not pairs:
        return []
    legal = {table.name: allowed for table, allowed in JOURNALS.items()}
    found = [IllegalTransition(*row) for row in conn.execute(sa.union_all(*pairs))]
    return sorted(t for t in found if (t.from_state, t.to_state) not in legal[t.journal])
