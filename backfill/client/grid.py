"""The web page's grid of a backfill: dates x tasks, one state a cell, compact.

Invariants:
- one snapshot: the summary, the tasks and every cell are read in the
  caller's transaction, so the counts and the cells agree;
- compact at any size: a cell is one character, `CODES[i]` for `STATES[i]`
  (`.` where a date has no TI of that task), and a date is one string of
  cells in the order of `tasks`; 1,000 dates x 50 tasks is about 60 kB of
  JSON before compression;
- `tasks` is the backfill's own tasks in creation (topological) order, and
  `dates` ascend, whatever order the runs were made in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from backfill.client.shapes import iso
from backfill.model.states import RunState, TIState
from backfill.store import grid
from backfill.store.status import Summary

STATES = tuple(TIState)
CODES = "0123456789abcdefghijklmnopqrstuvwxyz"[: len(STATES)]
_CODE = {state.value: CODES[i] for i, state in enumerate(STATES)}
_RUN_CODE = {state: i for i, state in enumerate(RunState)}
MISSING = "."


def grid_json(conn: Connection, found: Summary) -> dict[str, Any]:
    """The grid of backfill `found`: its tasks, dates, run states and cells."""
    tasks = grid.task_ids(conn, found.id)
    column = {task_id: i for i, task_id in enumerate(tasks)}
    runs = grid.runs_of(conn, found.id)
    rows = {r.id: [MISSING] * len(tasks) for r in runs}
    for dag_run_id, task_id, state in grid.every_cell(conn, found.id):
        rows[dag_run_id][column[task_id]] = _CODE[state]
    return {
        "id": found.id,
        "dag_id": found.dag_id,
        "state": found.state.value,
        "states": [s.value for s in STATES],
        "codes": CODES,  # cell character i is state i
        "run_states": [s.value for s in RunState],
        "tasks": list(tasks),
        "dates": [iso(r.logical_date) for r in runs],
        "runs": [_RUN_CODE[r.state] for r in runs],
        "cells": ["".join(rows[r.id]) for r in runs],
    }
