"""The errors of the client layer (`backfill.errors` holds the roots)."""

from __future__ import annotations

from backfill.errors import UserError


class TINotFound(UserError):
    """No task instance of the backfill matches the task and date asked for."""
