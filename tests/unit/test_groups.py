"""Task groups (`backfill.model.groups`): ids, edges and options as Airflow's TaskGroup."""

from __future__ import annotations

import re

import pendulum
import pytest

from backfill import Context
from backfill.client.grid import grouped
from backfill.model.dag import DAG
from backfill.model.errors import DagDefinitionError

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def noop(ctx: Context) -> None:
    return None


def dag(**kwargs: object) -> DAG:
    return DAG("grouped", schedule="@daily", start_date=START, **kwargs)  # type: ignore[arg-type]


def test_tasks_in_a_group_are_prefixed_with_its_id_nested_too() -> None:
    d = dag()
    with d.task_group("etl") as etl:
        with d.task_group("extract") as extract:
            d.add_task("orders", noop)
        d.add_task("load", noop)
    d.add_task("report", noop)
    assert list(d.tasks) == ["etl.extract.orders", "etl.load", "report"]
    assert extract.group_id == "etl.extract"
    assert etl.task_ids == ["etl.extract.orders", "etl.load"]
    assert extract.task_ids == ["etl.extract.orders"]


def test_the_decorator_and_prefix_group_id_false() -> None:
    d = dag()
    with d.task_group("plain", prefix_group_id=False) as plain:

        @d.task
        def load(ctx: Context) -> None: ...

    assert list(d.tasks) == ["load"]
    assert plain.task_ids == ["load"]


def test_a_group_links_by_its_leaves_and_roots_as_airflow_does() -> None:
    d = dag()
    start = d.add_task("start", noop)
    with d.task_group("work") as work:
        a = d.add_task("a", noop)
        b = d.add_task("b", noop)
        c = d.add_task("c", noop)
        a >> b  # a is the root; b and c are the leaves
    end = d.add_task("end", noop)
    start >> work >> end
    assert d.tasks["work.a"].upstream_ids == {"start"}
    assert d.tasks["work.c"].upstream_ids == {"start"}
    assert d.tasks["work.b"].upstream_ids == {"work.a"}
    assert end.upstream_ids == {"work.b", "work.c"}
    assert (work.roots(), work.leaves()) == ([a, c], [b, c])


def test_lists_and_groups_on_either_side() -> None:
    d = dag()
    x, y = d.add_task("x", noop), d.add_task("y", noop)
    with d.task_group("g1") as g1:
        d.add_task("t", noop)
    with d.task_group("g2") as g2:
        d.add_task("t", noop)
    [x, y] >> g1
    g1 >> g2
    g2 << [y]
    assert d.tasks["g1.t"].upstream_ids == {"x", "y"}
    assert d.tasks["g2.t"].upstream_ids == {"g1.t", "y"}


def test_options_come_from_the_task_then_the_group_then_the_dag() -> None:
    d = dag(default_args={"retries": 1, "pool": "dag_pool"})
    with (
        d.task_group("outer", default_args={"retries": 2}),
        d.task_group("inner", default_args={"priority_weight": 7}),
    ):
        d.add_task("own", noop, retries=5)
        d.add_task("inherits", noop)
    own, inherits = d.tasks["outer.inner.own"], d.tasks["outer.inner.inherits"]
    assert (own.options.retries, own.options.pool) == (5, "dag_pool")
    assert (inherits.options.retries, inherits.options.priority_weight) == (2, 7)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d.task_group("a.b"), "a '.' separates the levels"),
        (lambda d: d.task_group(""), "task group id"),
        (lambda d: (d.task_group("g"), d.task_group("g")), "duplicate task group id 'g'"),
        (lambda d: d.task_group("g", default_args={"retries": -1}), "retries"),
        (lambda d: d.task_group("empty") >> d.add_task("t", noop), "has no tasks to link"),
    ],
)
def test_a_bad_group_is_refused_when_declared(make: object, says: str) -> None:
    with pytest.raises(DagDefinitionError, match=re.escape(says)):
        make(dag())  # type: ignore[operator]


def test_a_group_and_a_task_id_clash_is_refused() -> None:
    d = dag()
    d.add_task("g.t", noop)
    with d.task_group("g"), pytest.raises(DagDefinitionError, match=r"duplicate task id 'g\.t'"):
        d.add_task("t", noop)


def test_groups_change_ids_and_edges_only_not_the_fingerprint() -> None:
    grouped_dag, flat = dag(), dag()
    with grouped_dag.task_group("g") as g:
        grouped_dag.add_task("a", noop)
    g >> grouped_dag.add_task("b", noop)
    flat.add_task("g.a", noop) >> flat.add_task("b", noop)
    assert grouped_dag.fingerprint == flat.fingerprint
    assert grouped_dag.describe()["groups"] == [
        {"group_id": "g", "tooltip": "", "task_ids": ["g.a"]}
    ]


def test_the_grid_puts_a_groups_tasks_together_as_bands() -> None:
    tasks, bands = grouped(["start", "x.a", "y.a", "x.b", "end", "y.b"])
    assert tasks == ["start", "x.a", "x.b", "y.a", "y.b", "end"]
    assert bands == [
        {"group": "x", "start": 1, "end": 3},
        {"group": "y", "start": 3, "end": 5},
    ]
