"""Putting rows in a state for a test's set-up, by transitions their table lists.

The root conftest checks every journaled (from, to) pair of a test's databases
against its transition table after the test, so set-up that jumps a TI, run or
backfill straight to the state it wants (none -> success) would fail it.
`force_state` walks the shortest path of listed transitions instead, one
UPDATE per step; the set-up's other values go with the last statement.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from backfill.model.states import State, transitions_of


def force_state(
    conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], state: State, **values: Any
) -> int:
    """Move the rows of `table` that `where` selects (before the first step: `where` may
    name their state) to `state`, with `values`; how many."""
    ids = conn.execute(sa.select(table.c.id).where(where)).scalars().all()
    where = table.c.id.in_(ids)
    current = conn.execute(sa.select(table.c.state).where(where).distinct()).scalars().all()
    kind = type(state)
    for found in current:
        for src, dst in itertools.pairwise(path(kind(found), state)[:-1]):
            conn.execute(
                sa.update(table)
                .where(where, table.c.state == src.value)
                .values(state=dst.value, **_stamp(values))
            )
    stmt = sa.update(table).where(where).values(state=state.value, **values)
    return conn.execute(stmt).rowcount


def _stamp(values: dict[str, Any]) -> dict[str, Any]:
    """What a TI's intermediate steps carry, so their journal rows name the set-up's actor."""
    return {k: v for k, v in values.items() if k in ("updated_at", "updated_by")}


def path(src: State, dst: State) -> list[State]:
    """The shortest chain of transitions from `src` to `dst`, both included."""
    table = transitions_of(type(src))
    before: dict[State, State | None] = {src: None}
    todo = deque([src])
    while todo:
        state = todo.popleft()
        if state == dst:
            chain = [state]
            while (prev := before[chain[-1]]) is not None:
                chain.append(prev)
            return chain[::-1]
        for nxt in sorted(table[state]):
            if nxt not in before:
                before[nxt] = state
                todo.append(nxt)
    raise ValueError(f"no path of transitions leads from {src} to {dst}")
