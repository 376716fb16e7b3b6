"""Errors of the CLI's own machinery (local workers)."""

from __future__ import annotations

from backfill.errors import BackfillError


class LocalWorkersError(BackfillError):
    """A local worker could not be started."""
