"""Every error the package raises derives from `BackfillError`.

This module holds the roots and the errors every layer shares (configuration,
outages, malformed messages); each layer keeps its own in its `errors`
module: `model.errors`, `planning.errors`, `store.errors`, `engine.errors`,
`client.errors`, `web.errors`.

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


class ConfigError(UserError):
    """A configuration variable has an invalid value."""


class Unreachable(BackfillError):
    """The metadata database or the broker cannot be reached (exit 3): an outage, not a bug."""

    exit_code = 3


class BadMessage(BackfillError):
    """A message that is not a well-formed TI-try request."""
