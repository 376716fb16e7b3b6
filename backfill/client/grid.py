"""The web page's grid of a backfill: dates x tasks, one state a cell, compact.

Invariants:
- one snapshot: the summary, the tasks and every cell are read in the
  caller's transaction, so the counts and the cells agree;
- compact at any size: a cell is one character, `CODES[i]` for `STATES[i]`
  (`.` where a date has no TI of that task), and a date is one string of
  cells in the order of `tasks`; 1,000 dates x 50 tasks is about 60 kB of
  JSON before compression;
- `tasks` is the backfill's own tasks in creation (topological) order, each
  task group's together (`grouped`), and `dates` ascend, whatever order the
  runs were made in;
- a mapped task's cell is its TIs in that run folded (`store.grid.Cell`): its
  character is their most telling state (`store.grid.TELLING`), and it is
  listed in `mapped` as `[row, column, map_index, counts]`: `map_index` is the
  TI that shows that state (the TI page a click opens), `counts` its TIs by
  state, `removed` ones left out, as `"code:n"` pairs in TELLING order joined
  by spaces (`"5:1 4:2"`: one failed, two success); the number of mapped TIs
  is their sum. Only mapped cells are listed: a DAG that maps nothing adds 2
  bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def grouped(task_ids: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The tasks with each task group's together (in the order each group first comes),
    and the groups as bands of columns `[start, end)`. A task's group is its id up to the
    last `.` (`extract.load`: Airflow's prefixed ids); the web page reads no DAG file."""
    first: dict[str | None, int] = {}
    for i, task_id in enumerate(task_ids):
        first.setdefault(_group(task_id) or task_id, i)
    order = sorted(task_ids, key=lambda t: first[_group(t) or t])  # stable: in-group order kept
    bands: list[dict[str, Any]] = []
    for i, task_id in enumerate(order):
        group = _group(task_id)
        if group is None:
            continue
        if bands and bands[-1]["group"] == group and bands[-1]["end"] == i:
            bands[-1]["end"] = i + 1
        else:
            bands.append({"group": group, "start": i, "end": i + 1})
    return order, bands


def _group(task_id: str) -> str | None:
    return task_id.rpartition(".")[0] or None


def grid_json(conn: Connection, found: Summary) -> dict[str, Any]:
    """The grid of backfill `found`: its tasks (grouped), dates, run states and cells."""
    tasks, groups = grouped(grid.task_ids(conn, found.id))
    column = {task_id: i for i, task_id in enumerate(tasks)}
    runs = grid.runs_of(conn, found.id)
    rows = {r.id: [MISSING] * len(tasks) for r in runs}
    row_of = {r.id: i for i, r in enumerate(runs)}
    mapped: list[list[Any]] = []
    for dag_run_id, task_id, cell in grid.every_cell(conn, found.id):
        rows[dag_run_id][column[task_id]] = _CODE[cell.state]
        if cell.mapped:
            counts = " ".join(f"{_CODE[s]}:{n}" for s, n in cell.counts.items())
            mapped.append([row_of[dag_run_id], column[task_id], cell.map_index, counts])
    mapped.sort()
    return {
        "id": found.id,
        "dag_id": found.dag_id,
        "state": found.state.value,
        "states": [s.value for s in STATES],
        "codes": CODES,  # cell character i is state i
        "run_states": [s.value for s in RunState],
        "tasks": tasks,
        "groups": groups,  # task groups: bands of columns, [start, end)
        "dates": [iso(r.logical_date) for r in runs],
        "runs": [_RUN_CODE[r.state] for r in runs],
        "cells": ["".join(rows[r.id]) for r in runs],
        "mapped": mapped,  # [row, column, map_index, "code:n ..."] by row then column
    }
