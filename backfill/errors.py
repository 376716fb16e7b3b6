"""Every error the package raises derives from `BackfillError`.

`UserError` and its subclasses are mistakes of the person at the keyboard or
the author of a DAG file: the CLI prints their message on one line and exits
with code 2, having written nothing. Anything else is a bug or an outage and
is allowed to surface with its traceback.
"""

from __future__ import annotations


class BackfillError(Exception):
    """Root of every error raised by this package."""


class UserError(BackfillError):
    """Bad input: the message names what is wrong and what to do (exit 2)."""

    exit_code = 2


class DagDefinitionError(UserError):
    """A DAG or task declaration is invalid (cycle, duplicate id, bad option...)."""


class ScheduleError(DagDefinitionError):
    """A schedule or timezone cannot be understood."""


class DagNotFound(UserError):
    """No DAG with the requested id was found in the DAGs folder."""


class BadRange(UserError):
    """A backfill date range is unparseable, reversed or empty."""


class BadConf(UserError):
    """`--conf` is not a JSON object or is too large."""


class ConfigError(UserError):
    """A configuration variable has an invalid value."""


class Unreachable(BackfillError):
    """The metadata database or the broker cannot be reached (exit 3): an outage, not a bug."""

    exit_code = 3
