"""Dynamic task mapping, the pure parts: declaring (`task.expand`, `partial`), the
elements a map index gets, the count and its refusals, what the planner decides of a
mapped task's placeholder and TIs, and what a reader gets of a mapped task's results."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pendulum
import pytest
from support.factories import limit_counts

from backfill.config import Settings
from backfill.errors import BadMessage, ConfigError
from backfill.messages import TaskMessage
from backfill.model.context import Context
from backfill.model.dag import DAG
from backfill.model.errors import DagDefinitionError
from backfill.model.macros import context_for
from backfill.model.mapping import NotMappable, foldable
from backfill.model.states import RunState, TIState
from backfill.planning.pass_planner import Policy, plan
from backfill.planning.snapshot import PastTI, RunRow, Snapshot, TIRow
from backfill.store.results import TaskResult, read_value

START = pendulum.datetime(2024, 1, 1, tz="UTC")
NOW = pendulum.datetime(2030, 1, 1, tz="UTC")
_S = TIState


def _dag() -> DAG:
    return DAG("m", schedule="@daily", start_date=START)


def _flow(**double_options: Any) -> DAG:
    """numbers -> double (mapped over numbers, factor=2) -> total."""
    dag = _dag()

    @dag.task
    def numbers(ctx: Context) -> list[int]:
        return [1, 2, 3]

    @dag.task(**double_options)
    def double(ctx: Context, x: int, factor: int) -> int:
        return x * factor

    @dag.task
    def total(ctx: Context, values: list[int]) -> int:
        return sum(values)

    total(double.partial(factor=2).expand(x=numbers()))
    dag.check_bound()
    return dag


def _reader(values: dict[str, Any]) -> Callable[[str], Any]:
    return values.__getitem__


# -- declaring ---------------------------------------------------------------------


def test_expand_over_a_result_wires_the_source_and_describes_the_mapping() -> None:
    dag = _flow()
    assert dag.topological_order() == ("numbers", "double", "total")
    double = dag.describe()["tasks"][1]
    assert double["expand"] == {"x": {"result_of": "numbers"}}
    assert double["arguments"] == {"args": [], "kwargs": {"factor": 2}}
    assert dag.tasks["double"].expansion is not None
    assert dag.tasks["double"].expansion.sources() == ["numbers"]


def test_the_mapped_lists_are_part_of_the_fingerprint_and_unmapped_dags_keep_theirs() -> None:
    def flow(words: list[str]) -> DAG:
        dag = _dag()

        @dag.task
        def shout(ctx: Context, word: str) -> str:
            return word

        shout.expand(word=words)
        return dag

    assert flow(["a", "b"]).fingerprint == flow(["a", "b"]).fingerprint
    assert flow(["a", "b"]).fingerprint != flow(["a", "b", "c"]).fingerprint
    assert "expand" not in _dag().describe()


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda t, u: t.expand(), "expand() needs at least one parameter"),
        (lambda t, u: t.expand(x=5), "expand(x=...) takes a list"),
        (lambda t, u: t.partial(x=1).expand(x=[1]), "x given to both partial() and expand()"),
        (lambda t, u: t.expand(y=[1]), "missing a required argument: 'x'"),
        (lambda t, u: t.expand(x=[1], y=[1]), "unexpected keyword argument 'y'"),
        (lambda t, u: t.expand(x=[{1, 2}]), "neither a task's result"),
        (lambda t, u: (t.expand(x=[1]), t.expand(x=[2])), "is mapped twice"),
        (lambda t, u: (t(u()), t.expand(x=[2])), "is mapped twice"),
        (lambda t, u: (t.expand(x=[1]), t(u())), "is called twice"),
    ],
)
def test_a_bad_mapping_is_refused_when_declared(
    declare: Callable[[Any, Any], Any], message: str
) -> None:
    dag = _dag()

    @dag.task
    def up(ctx: Context) -> list[int]:
        return [1]

    @dag.task
    def mapped(ctx: Context, x: int) -> int:
        return x

    with pytest.raises(DagDefinitionError, match=re.escape(message)):
        declare(mapped, up)


def test_a_mapped_parameter_counts_as_bound() -> None:
    dag = _dag()

    @dag.task
    def mapped(ctx: Context, x: int, y: int) -> int:
        return x + y

    mapped.partial(y=1).expand(x=[1, 2])
    dag.check_bound()  # no error: y by partial, x by expand


# -- elements, count, refusals -------------------------------------------------------


def test_several_mapped_parameters_map_over_their_product_first_slowest() -> None:
    dag = _dag()

    @dag.task
    def numbers(ctx: Context) -> list[int]:
        return [1, 2, 3]

    @dag.task
    def pair(ctx: Context, x: int, y: str) -> str:
        return f"{x}{y}"

    pair.expand(x=numbers(), y=["a", "b"])
    expansion = dag.tasks["pair"].expansion
    assert expansion is not None
    read = _reader({"numbers": [1, 2, 3]})
    assert expansion.length(read, cap=1024) == 6
    elements = [expansion.element(i, read) for i in range(6)]
    assert [(e["x"], e["y"]) for e in elements] == [
        (1, "a"),
        (1, "b"),
        (2, "a"),
        (2, "b"),
        (3, "a"),
        (3, "b"),
    ]
    with pytest.raises(NotMappable, match="map index 6 is out of range"):
        expansion.element(6, read)
    with pytest.raises(NotMappable, match="makes 6 task instances, over BACKFILL_MAX_MAP_LENGTH"):
        expansion.length(read, cap=5)
    with pytest.raises(NotMappable, match="the result of 'numbers' is dict, not a list"):
        expansion.length(_reader({"numbers": {"a": 1}}), cap=1024)
    assert expansion.length(_reader({"numbers": []}), cap=1024) == 0


def test_a_mapped_ti_runs_with_its_own_element_and_the_shared_arguments() -> None:
    dag = _flow()
    results = {"numbers": [1, 2, 3]}
    ctx = context_for(
        dag,
        task_id="double",
        run_id="r",
        logical_date=START,
        data_interval_start=START,
        data_interval_end=START.add(days=1),
        try_number=1,
        map_index=2,
    )
    ctx = Context(**{**ctx.__dict__, "results": results.__getitem__})
    assert ctx.map_index == 2
    assert dag.tasks["double"].run(ctx) == 6


def test_a_mapped_task_cleared_with_its_source_is_folded_alone_it_is_not() -> None:
    dag = _flow()
    assert foldable(dag, {(1, "numbers"), (1, "double"), (1, "total")}) == [(1, "double")]
    assert foldable(dag, {(1, "double"), (2, "numbers")}) == []
    assert foldable(dag, {(1, "numbers"), (1, "gone")}) == []


# -- what a reader gets --------------------------------------------------------------


def _found(*rows: tuple[int, TIState, str | None]) -> list[TaskResult]:
    return [TaskResult(map_index=i, state=s, value=v) for i, s, v in rows]


def test_a_mapped_tasks_result_is_the_list_of_its_successes_by_map_index() -> None:
    mapped = _found((0, _S.SUCCESS, "2"), (1, _S.FAILED, None), (2, _S.SUCCESS, None))
    assert read_value(mapped, mapped=True).value == [2, None]
    assert read_value(_found((-1, _S.SKIPPED, None)), mapped=True).value == []
    waiting = read_value(_found((-1, _S.NONE, None)), mapped=True)
    assert waiting.missing == "it is not mapped yet (it is none)"
    assert read_value(_found((-1, _S.SUCCESS, '{"a":1}')), mapped=False).value == {"a": 1}
    assert read_value(_found((-1, _S.FAILED, None)), mapped=False).missing == "it is failed"
    assert read_value([], mapped=False).missing == "the run has no such task"


# -- the planner ---------------------------------------------------------------------


def _snapshot(dag: DAG, rows: list[tuple[str, int, TIState]]) -> Snapshot:
    run = RunRow(id=1, run_id="r0", logical_date=START, state=RunState.RUNNING)
    tis = []
    for n, (task_id, index, state) in enumerate(rows):
        options = dag.tasks[task_id].options
        tis.append(
            TIRow(
                id=n + 1,
                dag_run_id=1,
                task_id=task_id,
                state=state,
                try_number=0 if state in (_S.NONE, _S.SCHEDULED) else 1,
                max_tries=options.retries,
                pool=options.pool,
                pool_slots=options.pool_slots,
                priority_weight=options.priority_weight,
                map_index=index,
            )
        )
    return Snapshot(runs=(run,), tis=tuple(tis), queued_runs=0, limits=limit_counts())


POLICY = Policy(max_active_runs=4)


def test_a_placeholder_is_expanded_once_its_source_succeeded_never_queued() -> None:
    dag = _flow()
    waiting = plan(
        _snapshot(
            dag, [("numbers", -1, _S.RUNNING), ("double", -1, _S.NONE), ("total", -1, _S.NONE)]
        ),
        dag,
        POLICY,
        NOW,
    )
    assert not waiting.to_expand
    assert not waiting.to_queue
    ready = plan(
        _snapshot(
            dag, [("numbers", -1, _S.SUCCESS), ("double", -1, _S.NONE), ("total", -1, _S.NONE)]
        ),
        dag,
        POLICY,
        NOW,
    )
    assert [(t.task_id, t.map_index) for t in ready.to_expand] == [("double", -1)]
    assert not ready.to_queue
    assert ready.deadlock is None


def test_mapped_tis_are_queued_each_under_the_limits_and_downstream_waits_for_all() -> None:
    dag = _flow(max_active_tis_per_dag=2)
    rows = [("numbers", -1, _S.SUCCESS)] + [("double", i, _S.NONE) for i in range(4)]
    decided = plan(_snapshot(dag, [*rows, ("total", -1, _S.NONE)]), dag, POLICY, NOW)
    assert [(t.task_id, t.map_index) for t in decided.to_queue] == [("double", 0), ("double", 1)]
    assert set(decided.waiting) == {next(iter(decided.waiting))}  # held by the task's limit

    some = [("numbers", -1, _S.SUCCESS), ("double", 0, _S.SUCCESS), ("double", 1, _S.RUNNING)]
    assert not plan(_snapshot(dag, [*some, ("total", -1, _S.NONE)]), dag, POLICY, NOW).to_queue
    failed = [("numbers", -1, _S.SUCCESS), ("double", 0, _S.SUCCESS), ("double", 1, _S.FAILED)]
    decided = plan(_snapshot(dag, [*failed, ("total", -1, _S.NONE)]), dag, POLICY, NOW)
    assert [t.task_id for t in decided.upstream_failed] == ["total"]
    done = [("numbers", -1, _S.SUCCESS), ("double", 0, _S.SUCCESS), ("double", 1, _S.SUCCESS)]
    decided = plan(_snapshot(dag, [*done, ("total", -1, _S.NONE)]), dag, POLICY, NOW)
    assert [t.task_id for t in decided.to_queue] == ["total"]


def test_a_run_ends_by_every_mapped_ti_of_its_leaves() -> None:
    dag = _dag()

    @dag.task
    def leaf(ctx: Context, x: int) -> int:
        return x

    leaf.expand(x=[1, 2])
    ended = plan(
        _snapshot(dag, [("leaf", 0, _S.SUCCESS), ("leaf", 1, _S.FAILED)]), dag, POLICY, NOW
    )
    assert [state for _, state in ended.finished_runs] == [RunState.FAILED]
    running = plan(
        _snapshot(dag, [("leaf", 0, _S.SUCCESS), ("leaf", 1, _S.RUNNING)]), dag, POLICY, NOW
    )
    assert not running.finished_runs


def test_the_past_of_a_mapped_task_is_every_one_of_its_tis() -> None:
    ok = PastTI.of([_S.SUCCESS, _S.SKIPPED, _S.REMOVED], RunState.SUCCESS)
    assert ok.state in (_S.SUCCESS, _S.SKIPPED)
    assert PastTI.of([_S.SUCCESS, _S.FAILED, _S.RUNNING], RunState.RUNNING).state is _S.FAILED
    assert PastTI.of([_S.SUCCESS, _S.RUNNING], RunState.RUNNING).state is _S.RUNNING
    assert PastTI.of([_S.REMOVED], RunState.SUCCESS).state is _S.REMOVED


def test_with_mark_success_the_placeholder_is_queued_alone() -> None:
    dag = _flow()
    rows = [("numbers", -1, _S.SUCCESS), ("double", -1, _S.NONE), ("total", -1, _S.NONE)]
    decided = plan(_snapshot(dag, rows), dag, Policy(max_active_runs=4, maps=False), NOW)
    assert [(t.task_id, t.map_index) for t in decided.to_queue] == [("double", -1)]
    assert not decided.to_expand


def test_a_message_names_a_mapped_ti_and_one_without_map_index_is_still_read() -> None:
    sent = TaskMessage(
        ti_id=1, try_number=2, backfill_id=3, dag_id="m", task_id="double",
        logical_date="2024-01-01T00:00:00+00:00", map_index=4,
    )  # fmt: skip
    assert TaskMessage.from_kwargs(sent.kwargs()) == sent
    assert sent.describe() == "m/double[4]/2024-01-01T00:00:00+00:00 try 2"
    older = {k: v for k, v in sent.kwargs().items() if k != "map_index"}  # before mapping
    assert TaskMessage.from_kwargs(older).map_index == -1
    with pytest.raises(BadMessage, match="map_index must be an integer >= -1"):
        TaskMessage.from_kwargs({**sent.kwargs(), "map_index": -2})
    with pytest.raises(BadMessage, match="expected keys"):
        TaskMessage.from_kwargs({**sent.kwargs(), "extra": 1})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", 1024), ("5", 5), ("0", "at least 1"), ("many", "a whole number, got 'many'")],
)
def test_the_cap_comes_from_the_environment(raw: str, expected: int | str) -> None:
    env = {"BACKFILL_MAX_MAP_LENGTH": raw}
    if isinstance(expected, int):
        assert Settings.from_env(env).max_map_length == expected
    else:
        with pytest.raises(ConfigError, match=f"BACKFILL_MAX_MAP_LENGTH must be {expected}"):
            Settings.from_env(env)
