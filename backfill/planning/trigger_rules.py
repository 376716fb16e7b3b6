"""Trigger rules: given a task's upstream states, run, wait, or end it now. Pure.

Follows Airflow 2.10's TriggerRuleDep with `flag_upstream_failed=True`
(AIRFLOW_SEMANTICS.md section 2): only finished upstreams are counted, a task
without upstreams always runs, and a rule may decide `upstream_failed` or
`skipped` as soon as the outcome is certain, without waiting for the rest.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable

from backfill.model.states import TIState
from backfill.model.task_options import TriggerRule


class Verdict(enum.Enum):
    RUN = "run"
    WAIT = "wait"
    UPSTREAM_FAILED = "upstream_failed"
    SKIP = "skipped"


_R = TriggerRule
_V = Verdict
_ONLY_SUCCESS = frozenset({TIState.SUCCESS})
_FAILED_OR_SKIPPED = frozenset({TIState.FAILED, TIState.UPSTREAM_FAILED, TIState.SKIPPED})


def evaluate(rule: TriggerRule, upstream_states: Iterable[TIState]) -> Verdict:
    """The verdict for a TI whose direct upstream TIs are in `upstream_states`."""
    states = list(upstream_states)
    total = len(states)
    if total == 0 or rule is _R.ALWAYS:
        return _V.RUN
    if rule is _R.ALL_SUCCESS:  # the default rule, decided from the set of states alone
        seen = set(states)
        if seen == _ONLY_SUCCESS:
            return _V.RUN
        if seen.isdisjoint(_FAILED_OR_SKIPPED):
            return _V.WAIT
    n = Counter(states)
    success, skipped = n[TIState.SUCCESS], n[TIState.SKIPPED]
    failed = n[TIState.FAILED] + n[TIState.UPSTREAM_FAILED]
    done = success + skipped + failed + n[TIState.REMOVED]
    all_done = done >= total
    match rule:
        case _R.ALL_SUCCESS:
            if failed:
                return _V.UPSTREAM_FAILED
            if skipped:
                return _V.SKIP
            return _V.RUN if success == total else _V.WAIT
        case _R.ALL_FAILED:
            if success + skipped:
                return _V.SKIP
            return _V.RUN if failed == total else _V.WAIT
        case _R.ALL_DONE:
            return _V.RUN if all_done else _V.WAIT
        case _R.ONE_SUCCESS:
            if success:
                return _V.RUN
            if not all_done:
                return _V.WAIT
            return _V.SKIP if skipped == done else _V.UPSTREAM_FAILED
        case _R.ONE_FAILED:
            if failed:
                return _V.RUN
            return _V.SKIP if all_done else _V.WAIT
        case _R.ONE_DONE:  # an upstream that ran: upstream_failed and skipped do not count
            if success + n[TIState.FAILED]:
                return _V.RUN
            return _V.SKIP if all_done else _V.WAIT
        case _R.NONE_FAILED:
            if failed:
                return _V.UPSTREAM_FAILED
            return _V.RUN if success + skipped == total else _V.WAIT
        case _R.NONE_FAILED_MIN_ONE_SUCCESS:
            if failed:
                return _V.UPSTREAM_FAILED
            if skipped == total:
                return _V.SKIP
            return _V.RUN if success + skipped == total else _V.WAIT
        case _R.ALL_SKIPPED:
            if success + failed:
                return _V.SKIP
            return _V.RUN if skipped == total else _V.WAIT
        case _R.NONE_SKIPPED:
            if skipped:
                return _V.SKIP
            return _V.RUN if all_done else _V.WAIT
    raise AssertionError(f"unhandled trigger rule {rule!r}")  # pragma: no cover
