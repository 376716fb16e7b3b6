"""Errors of the engine: what a coordinator cannot go on with."""

from __future__ import annotations

from backfill.errors import BackfillError, UserError


class DispatchError(BackfillError):
    """The broker refused or could not take a batch of messages."""


class DagChanged(UserError):
    """The DAG file no longer matches the DAG the backfill was planned with."""


class RunChangedMeanwhile(UserError):
    """Another backfill or run was created for one of the dates after the plan was made."""


class MetricsAddressError(UserError):
    """The metrics cannot be served on the host and port asked for (e.g. the port is taken)."""
