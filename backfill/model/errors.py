"""Errors of the DAG model: a DAG file or a DAG id the user named is wrong."""

from __future__ import annotations

from backfill.errors import UserError


class DagDefinitionError(UserError):
    """A DAG or task declaration is invalid (cycle, duplicate id, bad option...)."""


class ScheduleError(DagDefinitionError):
    """A schedule or timezone cannot be understood."""


class DagNotFound(UserError):
    """No DAG with the requested id was found in the DAGs folder."""


class BadRange(UserError):
    """A backfill date range is unparseable, reversed or empty."""
