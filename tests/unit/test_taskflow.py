"""TaskFlow (`backfill.model.taskflow`): a task called in the DAG file passes its result."""

from __future__ import annotations

import dataclasses
from typing import Any

import pendulum
import pytest

from backfill import DAG, Context
from backfill.model.context import ResultMissing
from backfill.model.errors import DagDefinitionError
from backfill.model.macros import context_for
from backfill.model.taskflow import Output

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def make_dag(dag_id: str = "flow") -> DAG:
    return DAG(dag_id, schedule="@daily", start_date=START)


def context(dag: DAG, task_id: str, results: dict[str, Any] | None = None) -> Context:
    ctx = context_for(
        dag,
        task_id=task_id,
        run_id="r",
        logical_date=START,
        data_interval_start=START,
        data_interval_end=START.add(days=1),
        try_number=1,
    )
    if results is None:
        return ctx
    return dataclasses.replace(ctx, results=results.__getitem__)


def test_calling_tasks_wires_them_and_binds_each_result() -> None:
    dag = make_dag()

    @dag.task
    def extract(ctx: Context) -> list[int]:
        return [1, 2, 3]

    @dag.task
    def transform(ctx: Context, rows: list[int]) -> int:
        return sum(rows)

    @dag.task
    def load(ctx: Context, total: int, *, table: str) -> str:
        return f"{table}={total}"

    out = load(transform(extract()), table="sums")
    assert isinstance(out, Output)
    assert out.task is load
    assert dag.tasks["transform"].upstream_ids == {"extract"}
    assert dag.tasks["load"].upstream_ids == {"transform"}
    assert dag.describe()["tasks"][2]["arguments"] == {
        "args": [{"result_of": "transform"}],
        "kwargs": {"table": "sums"},
    }
    dag.check_bound()
    assert transform(context(dag, "transform", {"extract": [1, 2, 3]})) == 6
    assert load(context(dag, "load", {"transform": 6})) == "sums=6"


def test_an_output_links_like_its_task() -> None:
    dag = make_dag()
    first = dag.add_task("first", lambda ctx: 1)
    after = dag.add_task("after", lambda ctx: None)
    first() >> after
    assert after.upstream_ids == {"first"}


def test_a_literal_is_a_fresh_copy_for_each_run() -> None:
    dag = make_dag()

    def append(ctx: Context, items: list[int]) -> list[int]:
        items.append(9)
        return items

    task = dag.add_task("append", append)
    task([1])
    assert task(context(dag, "append", {})) == [1, 9]
    assert task(context(dag, "append", {})) == [1, 9]


@pytest.mark.parametrize(
    ("declare", "says"),
    [
        (lambda d, t: t(object()), "neither a task's result"),
        (lambda d, t: t(1, 2), "too many positional arguments"),
        (lambda d, t: (t(1), t(2)), "called twice"),
        (lambda d, t: t(make_dag("other").add_task("o", lambda ctx: 1)()), "another DAG"),
    ],
)
def test_a_bad_call_is_refused_when_declared(declare: Any, says: str) -> None:
    dag = make_dag()
    task = dag.add_task("t", lambda ctx, x: x)
    with pytest.raises(DagDefinitionError, match=says):
        declare(dag, task)


def test_a_result_is_read_only_on_a_worker() -> None:
    dag = make_dag()
    task = dag.add_task("t", lambda ctx, x: x)
    task(dag.add_task("up", lambda ctx: 1)())
    with pytest.raises(ResultMissing, match="'up': results are read by a worker"):
        task(context(dag, "t"))


def test_taskflow_is_in_the_fingerprint_only_where_used() -> None:
    plain, flow = make_dag(), make_dag()
    plain.add_task("a", lambda ctx: 1) >> plain.add_task("b", lambda ctx, x=0: x)
    flow.add_task("b", lambda ctx, x=0: x)(flow.add_task("a", lambda ctx: 1)())
    assert plain.describe()["tasks"][1].keys() == {"task_id", "upstream", "downstream", "options"}
    assert plain.fingerprint != flow.fingerprint
