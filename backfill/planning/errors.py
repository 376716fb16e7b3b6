"""Errors of the planning: options or a range that cannot make a backfill."""

from __future__ import annotations

from backfill.errors import UserError


class BadConf(UserError):
    """`--conf` is not a JSON object or is too large."""


class NoTaskSelected(UserError):
    """`--task-regex` matches none of the DAG's tasks."""


class BackwardsWithDependsOnPast(UserError):
    """`--run-backwards` while a selected task depends on its past (Airflow refuses it too)."""


class UnknownPool(UserError):
    """A pool the backfill needs does not exist."""
