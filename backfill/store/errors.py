"""Errors of the store: a row the caller named is missing or not in a usable state."""

from __future__ import annotations

from datetime import datetime

from backfill.errors import BackfillError, UserError


class BackfillNotFound(UserError):
    """No backfill has the id the user gave."""

    def __init__(self, backfill_id: int) -> None:
        super().__init__(f"no backfill with id {backfill_id}; see `backfill list`")


class BackfillStateConflict(UserError):
    """The backfill is not in a state the requested change may come from."""


class PoolError(UserError):
    """A pool operation refused: bad name or slots, unknown pool, or a pool in use."""


class RunConflict(BackfillError):
    """A run or TI was created or taken over by someone else meanwhile."""

    def __init__(self, logical_date: datetime | None = None) -> None:
        super().__init__(f"run at {logical_date} changed meanwhile" if logical_date else "")
        self.logical_date = logical_date
