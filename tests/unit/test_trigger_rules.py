"""Trigger rules against AIRFLOW_SEMANTICS.md section 2 (Airflow 2.10, flag_upstream_failed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.model.states import TIState
from backfill.model.task_options import TriggerRule
from backfill.planning.trigger_rules import Verdict, evaluate

_S = TIState
R = TriggerRule
RUN, WAIT, UF, SKIP = Verdict.RUN, Verdict.WAIT, Verdict.UPSTREAM_FAILED, Verdict.SKIP

# The finished states an upstream TI of a task in the DAG can reach. `removed`
# is finished too, but only a task gone from the DAG is removed, and such a task
# is no longer anyone's upstream (see test_removed_upstream_follows_airflow).
DONE = [_S.SUCCESS, _S.SKIPPED, _S.FAILED, _S.UPSTREAM_FAILED]
NOT_DONE = [
    _S.NONE,
    _S.SCHEDULED,
    _S.QUEUED,
    _S.RUNNING,
    _S.UP_FOR_RETRY,
    _S.UP_FOR_RESCHEDULE,
]


def upstreams(s: int = 0, k: int = 0, f: int = 0, uf: int = 0, p: int = 0) -> list[TIState]:
    return (
        [_S.SUCCESS] * s
        + [_S.SKIPPED] * k
        + [_S.FAILED] * f
        + [_S.UPSTREAM_FAILED] * uf
        + [_S.RUNNING] * p
    )


# AIRFLOW_SEMANTICS.md section 2, the U = 3 truth table, for the rules we support.
COLUMNS = [
    R.ALL_SUCCESS,
    R.ALL_FAILED,
    R.ALL_DONE,
    R.ONE_SUCCESS,
    R.ONE_FAILED,
    R.ONE_DONE,
    R.NONE_FAILED,
    R.NONE_FAILED_MIN_ONE_SUCCESS,
    R.NONE_SKIPPED,
    R.ALL_SKIPPED,
]
TRUTH_TABLE = {
    # S  K  F UF  P : all_succ all_fail all_done one_succ one_fail one_done none_fail nf_min1
    #                 none_skip all_skip
    (3, 0, 0, 0, 0): [RUN, SKIP, RUN, RUN, SKIP, RUN, RUN, RUN, RUN, SKIP],
    (2, 1, 0, 0, 0): [SKIP, SKIP, RUN, RUN, SKIP, RUN, RUN, RUN, SKIP, SKIP],
    (0, 3, 0, 0, 0): [SKIP, SKIP, RUN, SKIP, SKIP, SKIP, RUN, SKIP, SKIP, RUN],
    (1, 0, 1, 0, 1): [UF, SKIP, WAIT, RUN, RUN, RUN, UF, UF, WAIT, SKIP],
    (0, 0, 2, 1, 0): [UF, RUN, RUN, UF, RUN, RUN, UF, UF, RUN, SKIP],
    (0, 1, 1, 0, 1): [UF, SKIP, WAIT, WAIT, RUN, RUN, UF, UF, SKIP, SKIP],
    (0, 2, 0, 1, 0): [UF, SKIP, RUN, UF, RUN, SKIP, UF, UF, SKIP, SKIP],
}
CASES = [
    pytest.param(rule, counts, verdicts[i], id=f"{rule.value}-{'.'.join(map(str, counts))}")
    for counts, verdicts in TRUTH_TABLE.items()
    for i, rule in enumerate(COLUMNS)
]


@pytest.mark.parametrize(("rule", "counts", "expected"), CASES)
def test_airflow_truth_table(
    rule: TriggerRule, counts: tuple[int, int, int, int, int], expected: Verdict
) -> None:
    assert evaluate(rule, upstreams(*counts)) is expected


@pytest.mark.parametrize(("counts", "_"), TRUTH_TABLE.items())
def test_always_runs_whatever_the_upstreams(counts: tuple[int, ...], _: object) -> None:
    assert evaluate(R.ALWAYS, upstreams(*counts)) is RUN


# The per-rule table of section 2, one case per condition, beyond the U = 3 rows.
RULE_CASES = [
    # all_success: runs only when every upstream succeeded; a failure wins over a skip.
    (R.ALL_SUCCESS, upstreams(s=2, p=1), WAIT),
    (R.ALL_SUCCESS, upstreams(k=1, p=2), SKIP),
    (R.ALL_SUCCESS, upstreams(uf=1, p=2), UF),
    # all_failed: runs when all failed; any success or skip skips at once.
    (R.ALL_FAILED, upstreams(f=2, p=1), WAIT),
    (R.ALL_FAILED, upstreams(uf=3), RUN),
    (R.ALL_FAILED, upstreams(s=1, p=2), SKIP),
    # all_done: waits for every upstream, whatever their outcome.
    (R.ALL_DONE, upstreams(f=1, k=1, p=1), WAIT),
    (R.ALL_DONE, upstreams(f=1, k=1, uf=1), RUN),
    # one_success: one success runs it even with others pending.
    (R.ONE_SUCCESS, upstreams(s=1, p=2), RUN),
    (R.ONE_SUCCESS, upstreams(k=2, p=1), WAIT),
    (R.ONE_SUCCESS, upstreams(k=2, f=1), UF),
    # one_failed: one failure runs it; all done without one skips it.
    (R.ONE_FAILED, upstreams(uf=1, p=2), RUN),
    (R.ONE_FAILED, upstreams(s=2, p=1), WAIT),
    (R.ONE_FAILED, upstreams(s=1, k=2), SKIP),
    # none_failed: success or skip all round runs it (all skipped too).
    (R.NONE_FAILED, upstreams(s=1, k=1, p=1), WAIT),
    (R.NONE_FAILED, upstreams(f=1, p=2), UF),
    # none_skipped: any skip skips at once; a failed upstream still lets it run.
    (R.NONE_SKIPPED, upstreams(k=1, p=2), SKIP),
    (R.NONE_SKIPPED, upstreams(s=1, p=2), WAIT),
    (R.NONE_SKIPPED, upstreams(f=2, uf=1), RUN),
    # one_done: one upstream that ran (success or failed) runs it; upstream_failed and
    # skipped do not count, so all done without one that ran skips it.
    (R.ONE_DONE, upstreams(f=1, p=2), RUN),
    (R.ONE_DONE, upstreams(uf=1, k=1, p=1), WAIT),
    (R.ONE_DONE, upstreams(uf=2, k=1), SKIP),
    # none_failed_min_one_success: none_failed, but all skipped is skipped.
    (R.NONE_FAILED_MIN_ONE_SUCCESS, upstreams(s=1, k=1, p=1), WAIT),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, upstreams(uf=1, p=2), UF),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, upstreams(k=3), SKIP),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, upstreams(k=2, s=1), RUN),
    # all_skipped: every upstream skipped runs it; anything else that ended skips it at once.
    (R.ALL_SKIPPED, upstreams(k=2, p=1), WAIT),
    (R.ALL_SKIPPED, upstreams(s=1, p=2), SKIP),
    (R.ALL_SKIPPED, upstreams(uf=1, p=2), SKIP),
    (R.ALL_SKIPPED, upstreams(k=3), RUN),
    (R.ALWAYS, upstreams(p=3), RUN),
]


@pytest.mark.parametrize(("rule", "states", "expected"), RULE_CASES)
def test_each_rule_condition(rule: TriggerRule, states: list[TIState], expected: Verdict) -> None:
    assert evaluate(rule, states) is expected


@pytest.mark.parametrize("rule", list(R))
def test_a_task_without_upstream_always_runs(rule: TriggerRule) -> None:
    assert evaluate(rule, []) is RUN


@pytest.mark.parametrize("waiting", NOT_DONE)
def test_every_unfinished_state_counts_as_not_done(waiting: TIState) -> None:
    assert evaluate(R.ALL_SUCCESS, [_S.SUCCESS, waiting]) is WAIT
    assert evaluate(R.ALL_DONE, [_S.FAILED, waiting]) is WAIT


def test_removed_upstream_follows_airflow() -> None:
    # An unmapped TI: `removed` counts as done but never as a success or failure.
    assert evaluate(R.ALL_DONE, [_S.REMOVED, _S.SUCCESS]) is RUN
    assert evaluate(R.NONE_SKIPPED, [_S.REMOVED]) is RUN
    assert evaluate(R.ONE_SUCCESS, [_S.REMOVED, _S.SKIPPED]) is UF
    assert evaluate(R.ONE_FAILED, [_S.REMOVED]) is SKIP
    assert evaluate(R.ALL_SUCCESS, [_S.REMOVED, _S.SUCCESS]) is WAIT
    # ... never satisfies all_skipped or none_failed_min_one_success either (they wait).
    assert evaluate(R.ALL_SKIPPED, [_S.REMOVED, _S.SKIPPED]) is WAIT
    assert evaluate(R.NONE_FAILED_MIN_ONE_SUCCESS, [_S.REMOVED, _S.SUCCESS]) is WAIT
    assert evaluate(R.ONE_DONE, [_S.REMOVED, _S.SKIPPED]) is SKIP


finished = st.lists(st.sampled_from(DONE), min_size=1, max_size=8)
rules = st.sampled_from(list(R))


@given(rule=rules, states=finished)
def test_never_waits_once_every_upstream_is_finished(
    rule: TriggerRule, states: list[TIState]
) -> None:
    assert evaluate(rule, states) is not WAIT


@given(
    rule=rules,
    states=st.lists(st.sampled_from(DONE + NOT_DONE), min_size=1, max_size=8),
    data=st.data(),
)
def test_a_decision_stands_as_the_other_upstreams_finish(
    rule: TriggerRule, states: list[TIState], data: st.DataObject
) -> None:
    """A rule that decides early to run, or to end the TI without running, decides the
    same way at the end, so the planner may act in the pass it first sees it. (Which
    terminal state may differ: all_success skips at once on a skip, as Airflow does,
    though a later failure would have made it upstream_failed.)"""
    early = evaluate(rule, states)
    if early is WAIT:
        return
    later = evaluate(rule, [s if s in DONE else data.draw(st.sampled_from(DONE)) for s in states])
    assert (later is RUN) == (early is RUN)
