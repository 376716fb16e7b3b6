"""Every row of the fault matrix, in the order of issue 11's list."""

from __future__ import annotations

from . import rows_broker, rows_coordinators, rows_workers
from .matrix import Row

ROWS: list[Row] = [*rows_workers.ROWS, *rows_broker.ROWS, *rows_coordinators.ROWS]


def select(only: str) -> list[Row]:
    """The rows named in `only` (comma-separated keys), in matrix order; all if empty.
    `KeyError` naming what is unknown."""
    wanted = [key.strip() for key in only.split(",") if key.strip()]
    known = {row.key for row in ROWS}
    unknown = [key for key in wanted if key not in known]
    if unknown:
        raise KeyError(f"unknown rows: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [row for row in ROWS if not wanted or row.key in wanted]
