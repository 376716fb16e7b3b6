"""Callbacks: validated when declared, inherited from default_args (DAG and group),
left out of the DAG's shape; the worker's choice of callback per outcome; the
coordinator's run callbacks and their context; a callback that raises is logged with
its key and changes nothing. End to end on real workers: tests/cli/test_callbacks.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest

from backfill import DAG
from backfill.callbacks import invoke
from backfill.engine import run_callbacks
from backfill.engine.passes import DEADLOCKED, RunEnd
from backfill.model.callbacks import CallbackContext, callback_context, check_callbacks
from backfill.model.errors import DagDefinitionError
from backfill.model.macros import context_for
from backfill.model.states import RunState, TIState
from backfill.store.runs import EndedRun
from workers.callbacks import after_outcome

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def make_dag(**kwargs: Any) -> DAG:
    return DAG("cb", schedule="@daily", start_date=START, **kwargs)


def noop(ctx: CallbackContext) -> None: ...


def other(ctx: CallbackContext) -> None: ...


class Seen:
    """Callbacks that remember what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CallbackContext]] = []

    def __call__(self, name: str) -> Any:
        def callback(ctx: CallbackContext) -> None:
            self.calls.append((name, ctx))

        return callback


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ()), (noop, (noop,)), ([noop, other], (noop, other)), ((noop,), (noop,)), ([], ())],
)
def test_a_callback_option_is_none_a_callable_or_a_list_of_them(value: Any, expected: Any) -> None:
    assert check_callbacks("task 'a'", "on_failure_callback", value) == expected


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ("alert", "must be a callable or a list of callables, got 'alert'"),
        ([noop, 3], "must be a callable or a list of callables, got 3"),
        (lambda: None, "must take exactly one argument, the context"),
        (lambda ctx, extra: None, "must take exactly one argument, the context"),
    ],
)
def test_a_bad_callback_is_refused_when_declared_naming_the_task_and_option(
    value: Any, wrong: str
) -> None:
    dag = make_dag()
    with pytest.raises(DagDefinitionError, match="task 'a' of DAG 'cb'") as err:
        dag.add_task("a", noop, on_retry_callback=value)
    assert "on_retry_callback" in str(err.value)
    assert wrong in str(err.value)


def test_bad_callbacks_in_default_args_or_on_the_dag_are_refused_when_declared() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'cb' default_args: option 'on_suc"):
        make_dag(default_args={"on_success_callback": "nope"})
    with pytest.raises(DagDefinitionError, match="DAG 'cb': option 'on_failure_callback'"):
        make_dag(on_failure_callback=[noop, None])
    with pytest.raises(TypeError):  # a run has no retry: not an argument of DAG
        make_dag(on_retry_callback=noop)


# --- inheritance and shape ------------------------------------------------------------------


def test_callbacks_come_from_default_args_and_a_task_overrides_them() -> None:
    dag = make_dag(default_args={"on_failure_callback": noop, "on_retry_callback": [noop]})
    inherits = dag.add_task("inherits", noop)
    overrides = dag.add_task("overrides", noop, on_failure_callback=[other, noop])
    assert inherits.options.on_failure_callback == (noop,)
    assert inherits.options.on_retry_callback == (noop,)
    assert inherits.options.on_success_callback == ()
    assert overrides.options.on_failure_callback == (other, noop)
    assert overrides.options.on_retry_callback == (noop,)


def test_a_task_groups_default_args_give_callbacks_to_its_tasks() -> None:
    dag = make_dag(default_args={"on_success_callback": noop})
    with dag.task_group("extract", default_args={"on_success_callback": other}):
        inside = dag.add_task("load", noop)
    outside = dag.add_task("report", noop)
    assert inside.options.on_success_callback == (other,)
    assert outside.options.on_success_callback == (noop,)


def test_callbacks_are_not_part_of_the_dags_shape() -> None:
    plain = make_dag()
    plain.add_task("a", noop)
    called = make_dag(on_success_callback=noop, default_args={"on_failure_callback": noop})
    called.add_task("a", noop, on_retry_callback=other)
    assert called.fingerprint == plain.fingerprint  # like the callables' code
    assert called.describe() == plain.describe()
    assert "on_retry_callback" not in called.tasks["a"].options.as_json()
    assert called.on_success_callback == (noop,)
    assert called.on_failure_callback == ()


# --- calling --------------------------------------------------------------------------------


def ctx_of(dag: DAG, task_id: str = "a", **extra: Any) -> CallbackContext:
    ctx = context_for(
        dag,
        task_id=task_id,
        run_id="backfill__2024-01-02T00:00:00+00:00",
        logical_date=START.add(days=1),
        data_interval_start=START.add(days=1),
        data_interval_end=START.add(days=2),
        try_number=1,
        conf={"k": 1},
    )
    return callback_context(ctx, **extra)


def test_a_callback_that_raises_is_logged_with_its_key_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Seen()

    def boom(ctx: CallbackContext) -> None:
        raise RuntimeError("pager down")

    ctx = ctx_of(make_dag())
    with caplog.at_level(logging.INFO, logger="backfill.callbacks"):
        failed = invoke((boom, seen("after")), ctx, event="on_failure_callback", key="cb/a try 1")
    assert failed == 1
    assert [name for name, _ in seen.calls] == ["after"]
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage().startswith("cb/a try 1: on_failure_callback ")
    assert "raised; the outcome stands" in error.getMessage()
    assert error.exc_info is not None
    assert "pager down" in str(error.exc_info[1])


@pytest.mark.parametrize(
    ("state", "called", "exception"),
    [
        (TIState.SUCCESS, ["success"], None),
        (TIState.FAILED, ["failure"], "ValueError: bad"),
        (TIState.UP_FOR_RETRY, ["retry"], "ValueError: bad"),
        (TIState.SKIPPED, [], None),
        (TIState.UP_FOR_RESCHEDULE, [], None),
    ],
)
def test_the_worker_runs_the_one_callback_of_the_recorded_outcome(
    state: TIState, called: list[str], exception: str | None
) -> None:
    seen = Seen()
    dag = make_dag()
    task = dag.add_task(
        "a",
        noop,
        on_success_callback=seen("success"),
        on_failure_callback=seen("failure"),
        on_retry_callback=seen("retry"),
    )
    error = None if state is TIState.SUCCESS else "ValueError: bad"
    after_outcome(task, lambda: ctx_of(dag), state, error=error, key="cb/a try 1")
    assert [name for name, _ in seen.calls] == called
    for _, ctx in seen.calls:
        assert ctx.exception == exception
        assert ctx.task_id == "a"
        assert ctx.try_number == 1
        assert ctx.conf == {"k": 1}
        assert ctx.ds == "2024-01-02"


def ended(run_id: int, state: RunState) -> EndedRun:
    at = datetime(2024, 1, run_id, tzinfo=UTC)
    return EndedRun(
        id=run_id,
        run_id=f"backfill__{at.isoformat()}",
        logical_date=at,
        data_interval_start=at,
        data_interval_end=at + timedelta(days=1),
        conf={"source": "s3"},
        state=state,
    )


def test_the_coordinator_runs_a_runs_callbacks_with_airflows_reason() -> None:
    seen = Seen()
    dag = make_dag(on_success_callback=seen("success"), on_failure_callback=seen("failure"))
    first = dag.add_task("first", noop)
    first >> dag.add_task("last", noop)
    ends = [
        RunEnd(run=ended(1, RunState.SUCCESS), reason="success"),
        RunEnd(run=ended(2, RunState.FAILED), reason="task_failure"),
        RunEnd(run=ended(3, RunState.FAILED), reason=DEADLOCKED),
    ]
    run_callbacks.fire(dag, ends, None)
    got = [(name, ctx.reason, ctx.ds, ctx.task_id) for name, ctx in seen.calls]
    assert got == [
        ("success", "success", "2024-01-01", "last"),  # the last task's context, as Airflow's
        ("failure", "task_failure", "2024-01-02", "last"),
        ("failure", "all_tasks_deadlocked", "2024-01-03", "last"),
    ]
    assert all(ctx.conf == {"source": "s3"} == ctx.params for _, ctx in seen.calls)


def test_a_dag_without_run_callbacks_calls_nothing() -> None:
    dag = make_dag()
    dag.add_task("a", noop)
    run_callbacks.fire(dag, [RunEnd(run=ended(1, RunState.FAILED), reason="task_failure")], None)


def test_a_dag_without_tasks_still_gets_its_run_callback() -> None:
    seen = Seen()
    dag = make_dag(on_success_callback=seen("success"))
    run_callbacks.fire(dag, [RunEnd(run=ended(1, RunState.SUCCESS), reason="success")], None)
    assert [(name, ctx.task_id, ctx.try_number) for name, ctx in seen.calls] == [("success", "", 0)]
