"""The errors of the web layer, and the HTTP status of every error a request can meet.

Invariants:
- every error answer is JSON `{"error": "<what is wrong and what to do>"}`
  (a 422 adds `detail`, pydantic's list of what failed), never a traceback;
- bad input is a 4xx and nothing was written (the client layer validates
  before it writes); an outage of the database or broker is 503.
"""

from __future__ import annotations

from backfill.client.errors import TINotFound
from backfill.engine.errors import DagChanged, RunChangedMeanwhile
from backfill.errors import BackfillError, Unreachable, UserError
from backfill.store.errors import BackfillNotFound, BackfillStateConflict, RunConflict


class Unauthorized(UserError):
    """No valid token (401)."""


class Forbidden(UserError):
    """A token, but not allowed to do this (403)."""


class NotFound(UserError):
    """No such page or object (404)."""


STATUS: tuple[tuple[type[BackfillError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (BackfillNotFound, 404),
    (TINotFound, 404),
    (BackfillStateConflict, 409),  # e.g. pausing a cancelled backfill
    (RunConflict, 409),  # a run of the range was created meanwhile
    (RunChangedMeanwhile, 409),
    (DagChanged, 409),  # the DAG file changed since the backfill was planned
    (UserError, 400),
    (Unreachable, 503),
)


def status_of(exc: BackfillError) -> int:
    """The HTTP status of `exc`: the first class it is an instance of."""
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
