"""The errors of the client layer (`backfill.errors` holds the roots)."""

from __future__ import annotations

from backfill.errors import BackfillError, UserError


class TINotFound(UserError):
    """No task instance of the backfill matches the task and date asked for."""


class LocalWorkersError(BackfillError):
    """A local worker could not be started, or every one of them has exited."""
