"""The DAG model (DESIGN section 4, "DAG files"): declaration, validation, order, fingerprint."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill import DAG, Context, Skip
from backfill.errors import UserError
from backfill.model.errors import DagDefinitionError, ScheduleError
from backfill.model.task import Task
from backfill.model.task_options import OPTION_NAMES, TaskOptions, TriggerRule

START = pendulum.datetime(2016, 1, 1, tz="UTC")
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


def noop(ctx: Context) -> None:
    """A task callable that does nothing."""


def make_dag(dag_id: str = "d", **kwargs: Any) -> DAG:
    kwargs.setdefault("schedule", "@daily")
    kwargs.setdefault("start_date", START)
    return DAG(dag_id, **kwargs)


def add(dag: DAG, *task_ids: str, **options: Any) -> list[Task]:
    return [dag.add_task(tid, noop, **options) for tid in task_ids]


def edge_set(dag: DAG) -> set[tuple[str, str]]:
    return set(dag.edges())


def make_context(dag_id: str, task_id: str, ds: str, **overrides: Any) -> Context:
    logical_date = pendulum.parse(ds, tz="UTC")
    assert isinstance(logical_date, pendulum.DateTime)
    values: dict[str, Any] = {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": f"backfill__{logical_date.isoformat()}",
        "logical_date": logical_date,
        "ds": ds,
        "ts": logical_date.isoformat(),
        "prev_ds": logical_date.subtract(days=1).to_date_string(),
        "next_ds": logical_date.add(days=1).to_date_string(),
        "data_interval_start": logical_date,
        "data_interval_end": logical_date.add(days=1),
        "try_number": 1,
        "conf": {},
    }
    return Context(**{**values, **overrides})


# --- declaring tasks --------------------------------------------------------------------------


def test_bare_decorator_names_the_task_after_the_function_with_default_options() -> None:
    dag = make_dag()
    seen: list[str] = []

    @dag.task
    def extract(ctx: Context) -> None:
        seen.append(ctx.task_id)

    assert isinstance(extract, Task)
    assert dag.tasks == {"extract": extract}
    assert extract.task_id == "extract"
    assert extract.dag is dag
    assert extract.options == TaskOptions()
    extract(make_context("d", "extract", "2016-01-01"))
    assert seen == ["extract"]


def test_decorator_with_task_id_and_every_option() -> None:
    dag = make_dag()
    options: dict[str, Any] = {
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "depends_on_past": True,
        "trigger_rule": "one_failed",
        "pool": "db",
        "pool_slots": 2,
        "priority_weight": -5,
        "max_active_tis_per_dag": 4,
        "queue": "heavy",
        "execution_timeout": timedelta(hours=1),
        "on_success_callback": print,
        "on_failure_callback": [print, repr],
        "on_retry_callback": (print,),
    }
    assert set(options) == OPTION_NAMES  # this test covers every option DESIGN lists

    @dag.task(task_id="also_run_this", **options)
    def also(ctx: Context) -> None: ...

    assert list(dag.tasks) == ["also_run_this"]
    got = also.options
    normalised = {"on_success_callback": (print,), "on_failure_callback": (print, repr)}
    assert got == TaskOptions(**{**options, **normalised, "trigger_rule": TriggerRule.ONE_FAILED})
    assert got.trigger_rule is TriggerRule.ONE_FAILED
    assert got.as_json()["trigger_rule"] == "one_failed"
    assert got.as_json()["retry_delay"] == 30.0


def test_decorator_with_empty_parentheses() -> None:
    dag = make_dag()

    @dag.task()
    def load(ctx: Context) -> None: ...

    assert list(dag.tasks) == ["load"]


@pytest.mark.parametrize("rule", [r.value for r in TriggerRule])
def test_every_trigger_rule_is_accepted(rule: str) -> None:
    (task,) = add(make_dag(), "t", trigger_rule=rule)
    assert task.options.trigger_rule == rule


def test_default_args_apply_to_every_task_and_a_task_overrides_them() -> None:
    dag = make_dag(default_args={"retries": 2, "pool": "db", "retry_delay": timedelta(seconds=7)})
    plain, special = add(dag, "plain")[0], dag.add_task("special", noop, retries=0, queue="q")
    assert (plain.options.retries, plain.options.pool) == (2, "db")
    assert plain.options.retry_delay == timedelta(seconds=7)
    assert (special.options.retries, special.options.pool) == (0, "db")
    assert special.options.queue == "q"
    assert plain.options.queue == "default"


# --- dependencies -----------------------------------------------------------------------------


def test_rshift_returns_its_right_side_so_chains_work() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert (a >> b) is b
    assert (b >> c) is c
    assert edge_set(dag) == {("a", "b"), ("b", "c")}
    assert a.downstream_ids == {"b"}
    assert c.upstream_ids == {"b"}


def test_chain_of_three() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert (a >> b >> c) is c
    assert dag.edges() == [("a", "b"), ("b", "c")]


def test_lshift_points_the_other_way() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert (c << b << a) is a
    assert edge_set(dag) == {("b", "c"), ("a", "b")}


def test_list_on_the_left_of_rshift() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert ([a, b] >> c) is c
    assert edge_set(dag) == {("a", "c"), ("b", "c")}


def test_list_on_the_right_of_rshift() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert (a >> [b, c]) == [b, c]
    assert edge_set(dag) == {("a", "b"), ("a", "c")}


def test_list_on_the_right_of_lshift() -> None:
    dag = make_dag()
    a, b, c = add(dag, "a", "b", "c")
    assert (c << [a, b]) == [a, b]
    assert edge_set(dag) == {("a", "c"), ("b", "c")}


def test_list_on_the_left_of_lshift_and_tuples() -> None:
    dag = make_dag()
    a, b, c, d = add(dag, "a", "b", "c", "d")
    assert ([b, c] << a) is a
    assert ((b, c) >> d) is d
    assert edge_set(dag) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}


def test_list_in_the_middle_of_a_chain() -> None:
    dag = make_dag()
    a, b, c, d = add(dag, "a", "b", "c", "d")
    a >> [b, c] >> d
    assert edge_set(dag) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}


def test_repeating_an_edge_is_harmless() -> None:
    dag = make_dag()
    a, b = add(dag, "a", "b")
    a >> b
    a >> b
    assert dag.edges() == [("a", "b")]


@pytest.mark.parametrize("other", [noop, "b", 3, [noop]])
def test_linking_something_that_is_not_a_task_is_refused(other: Any) -> None:
    (a,) = add(make_dag(), "a")
    with pytest.raises(DagDefinitionError, match=r"dependencies link tasks.*@dag\.task"):
        a >> other


def test_linking_tasks_of_two_dags_is_refused_naming_both() -> None:
    first, second = make_dag("first"), make_dag("second")
    (a,) = add(first, "a")
    (x,) = add(second, "x")
    with pytest.raises(DagDefinitionError, match="same DAG") as err:
        a >> x
    assert "'x'" in str(err.value)
    assert "'first'" in str(err.value)
    assert "'second'" in str(err.value)
    with pytest.raises(DagDefinitionError, match="same DAG"):
        [a] >> x
    assert first.edges() == []
    assert second.edges() == []


# --- cycles -----------------------------------------------------------------------------------


def test_closing_a_cycle_is_refused_with_the_cycle_path() -> None:
    dag = make_dag("cyclic")
    a, b, c = add(dag, "a", "b", "c")
    a >> b >> c
    with pytest.raises(DagDefinitionError) as err:
        c >> a
    message = str(err.value)
    assert "a -> b -> c -> a" in message
    assert "'cyclic'" in message
    assert edge_set(dag) == {("a", "b"), ("b", "c")}  # the refused edge was not added
    assert dag.topological_order() == ("a", "b", "c")


def test_self_loop_is_refused() -> None:
    dag = make_dag()
    (a,) = add(dag, "a")
    with pytest.raises(DagDefinitionError, match="a -> a"):
        a >> a
    assert dag.edges() == []


def test_cycle_through_a_list_and_lshift() -> None:
    dag = make_dag()
    a, b, c, d = add(dag, "a", "b", "c", "d")
    a >> [b, c]
    c >> d
    with pytest.raises(DagDefinitionError, match="a -> c -> d -> a"):
        a << d


def test_diamond_is_not_a_cycle() -> None:
    dag = make_dag()
    a, b, c, d = add(dag, "a", "b", "c", "d")
    a >> [b, c] >> d
    a >> d
    assert dag.topological_order() == ("a", "b", "c", "d")


# --- validation at declaration time -----------------------------------------------------------


def test_duplicate_task_id() -> None:
    dag = make_dag("dup")
    add(dag, "extract")
    with pytest.raises(DagDefinitionError, match="duplicate task id 'extract'") as err:

        @dag.task(task_id="extract")
        def other(ctx: Context) -> None: ...

    assert "'dup'" in str(err.value)
    assert list(dag.tasks) == ["extract"]


def test_unknown_task_option_is_named_with_the_task() -> None:
    dag = make_dag("opts")
    with pytest.raises(DagDefinitionError, match="unknown option 'retires'") as err:
        dag.add_task("t", noop, retires=3)
    assert "task 't' of DAG 'opts'" in str(err.value)
    assert "retries" in str(err.value)  # the known options are listed
    assert dag.tasks == {}


def test_unknown_option_in_default_args() -> None:
    with pytest.raises(DagDefinitionError, match="default_args: unknown option 'owner'") as err:
        make_dag("defaults", default_args={"owner": "me", "retries": 1})
    assert "'defaults'" in str(err.value)


def test_unknown_trigger_rule() -> None:
    with pytest.raises(DagDefinitionError, match="'trigger_rule' must be one of") as err:
        add(make_dag(), "t", trigger_rule="all_sucess")
    assert "'all_sucess'" in str(err.value)
    assert "none_skipped" in str(err.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retries", -1),
        ("retries", True),
        ("retries", "1"),
        ("retries", 1.0),
        ("retry_delay", 5),
        ("retry_delay", timedelta(seconds=-1)),
        ("retry_exponential_backoff", "yes"),
        ("max_retry_delay", timedelta(0)),
        ("max_retry_delay", 60),
        ("depends_on_past", 1),
        ("pool", ""),
        ("pool", "   "),
        ("pool", None),
        ("pool", "p" * 251),
        ("pool_slots", 0),
        ("pool_slots", 1.5),
        ("priority_weight", 1.5),
        ("priority_weight", None),
        ("max_active_tis_per_dag", 0),
        ("max_active_tis_per_dag", False),
        ("queue", 7),
        ("execution_timeout", timedelta(0)),
        ("execution_timeout", 300),
    ],
)
def test_wrong_option_value_is_refused_naming_option_and_value(option: str, value: Any) -> None:
    dag = make_dag("typed")
    with pytest.raises(DagDefinitionError, match=f"option '{option}' must be") as err:
        dag.add_task("t", noop, **{option: value})
    assert "task 't' of DAG 'typed'" in str(err.value)
    assert repr(value)[:40] in str(err.value)
    assert dag.tasks == {}


def test_wrong_option_value_in_default_args() -> None:
    with pytest.raises(DagDefinitionError, match="default_args: option 'retry_delay' must be"):
        make_dag(default_args={"retry_delay": 5})


def test_option_value_overridden_per_task_is_checked_too() -> None:
    dag = make_dag(default_args={"retries": 1})
    with pytest.raises(DagDefinitionError, match="'retries' must be a non-negative integer"):
        dag.add_task("t", noop, retries=-1)


@pytest.mark.parametrize("schedule", ["not a cron", "61 * * * *", "@fortnightly", "* * *"])
def test_bad_schedule_is_a_schedule_error_naming_the_dag(schedule: str) -> None:
    with pytest.raises(ScheduleError) as err:
        make_dag("nightly_report", schedule=schedule)
    assert "nightly_report" in str(err.value)
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize("start_date", [datetime(2016, 1, 1), "2016-01-01", None])
def test_start_date_must_be_timezone_aware(start_date: Any) -> None:
    with pytest.raises(DagDefinitionError, match="start_date must be timezone-aware") as err:
        make_dag("naive", start_date=start_date)
    assert "'naive'" in str(err.value)


def test_dag_timezone_is_the_start_dates() -> None:
    dag = make_dag(start_date=pendulum.datetime(2024, 3, 1, 3, tz="Europe/Amsterdam"))
    assert dag.timezone.name == "Europe/Amsterdam"
    assert dag.start_date == pendulum.datetime(2024, 3, 1, 2, tz="UTC")


@pytest.mark.parametrize("limit", ["max_active_runs", "max_active_tasks"])
@pytest.mark.parametrize("value", [0, -1, True, "4"])
def test_run_limits_must_be_positive_integers(limit: str, value: Any) -> None:
    with pytest.raises(DagDefinitionError, match=f"{limit} must be an integer >= 1"):
        make_dag(**{limit: value})


@pytest.mark.parametrize("dag_id", ["", "has space", "semi;colon", "x" * 251, None])
def test_bad_dag_id(dag_id: Any) -> None:
    with pytest.raises(DagDefinitionError, match="dag_id must be"):
        make_dag(dag_id)


@pytest.mark.parametrize("task_id", ["", "has space", "a/b", "x" * 251])
def test_bad_task_id(task_id: str) -> None:
    dag = make_dag("ids")
    with pytest.raises(DagDefinitionError, match="DAG 'ids': task_id must be"):
        dag.add_task(task_id, noop)


def test_a_lambda_needs_an_explicit_task_id() -> None:
    dag = make_dag()
    with pytest.raises(DagDefinitionError, match="'<lambda>'"):
        dag.task(lambda ctx: None)
    assert dag.task(task_id="named")(lambda ctx: None).task_id == "named"


def test_task_decorator_given_a_string_points_to_task_id() -> None:
    with pytest.raises(DagDefinitionError, match=r"@dag\.task\(task_id=\.\.\.\)"):
        make_dag().task("extract")  # type: ignore[call-overload]


def no_args() -> None: ...


def two_args(ctx: Context, other: int) -> None: ...


def keyword_only(*, ctx: Context) -> None: ...


@pytest.mark.parametrize("fn", [no_args, keyword_only])
def test_callable_must_take_the_context_first(fn: Callable[..., None]) -> None:
    dag = make_dag("sig")
    with pytest.raises(DagDefinitionError, match="take the task's Context as its first") as err:
        dag.add_task("t", fn)
    assert "task 't' of DAG 'sig'" in str(err.value)


def test_a_parameter_after_the_context_must_be_bound_by_taskflow() -> None:
    dag = make_dag("sig")
    dag.add_task("t", two_args)  # declared: TaskFlow may bind `other` later in the file
    with pytest.raises(DagDefinitionError, match="takes parameters after its Context"):
        dag.check_bound()


def test_not_callable_is_refused() -> None:
    with pytest.raises(DagDefinitionError, match="expected a function"):
        make_dag().add_task("t", 42)  # type: ignore[arg-type]


def test_callables_with_optional_extras_are_accepted() -> None:
    def with_default(ctx: Context, retries_seen: int = 0) -> None: ...

    def variadic(*args: Any) -> None: ...

    dag = make_dag()
    dag.add_task("a", with_default)
    dag.add_task("b", variadic)
    assert list(dag.tasks) == ["a", "b"]


def test_definition_errors_are_user_errors() -> None:
    assert issubclass(DagDefinitionError, UserError)
    assert DagDefinitionError("x").exit_code == 2


# --- topological order ------------------------------------------------------------------------


def test_ties_are_broken_by_declaration_order_not_by_name() -> None:
    dag = make_dag()
    z, _, x = add(dag, "z", "y", "x")
    assert dag.topological_order() == ("z", "y", "x")
    x >> z
    assert dag.topological_order() == ("y", "x", "z")


def test_a_ready_task_declared_earlier_goes_first() -> None:
    dag = make_dag()
    _, b, a, _ = add(dag, "c", "b", "a", "d")
    a >> b  # b becomes ready only after a; c and d have no upstream
    assert dag.topological_order() == ("c", "a", "b", "d")


def test_empty_dag() -> None:
    dag = make_dag()
    assert dag.topological_order() == ()
    assert dag.edges() == []


def reference_order(declared: list[str], edges: list[tuple[str, str]]) -> tuple[str, ...]:
    """The obvious O(n^2) definition: repeatedly take the first declared task that is ready."""
    placed: list[str] = []
    while len(placed) < len(declared):
        ready = [
            t for t in declared if t not in placed and all(u in placed for u, d in edges if d == t)
        ]
        placed.append(ready[0])
    return tuple(placed)


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(declaration order, edges, the same edges in another order); edges go low -> high index."""
    n = draw(st.integers(min_value=1, max_value=12))
    names = [f"t{i}" for i in range(n)]
    pairs = [(names[i], names[j]) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    declared = draw(st.permutations(names))
    return list(declared), edges, list(draw(st.permutations(edges)))


def build(declared: list[str], edges: list[tuple[str, str]]) -> DAG:
    dag = make_dag("random")
    tasks = {tid: dag.add_task(tid, noop) for tid in declared}
    for up, down in edges:
        tasks[up] >> tasks[down]
    return dag


@settings(max_examples=200, deadline=None)
@given(random_dags())
def test_topological_order_property(case: tuple[list[str], Any, Any]) -> None:
    declared, edges, shuffled_edges = case
    order = build(declared, edges).topological_order()
    position = {tid: i for i, tid in enumerate(order)}
    assert sorted(order) == sorted(declared)  # a permutation of the tasks
    assert all(position[up] < position[down] for up, down in edges)  # every edge goes forward
    assert order == build(declared, shuffled_edges).topological_order()  # independent copy
    assert order == reference_order(declared, edges)  # ties by declaration order


@settings(max_examples=200, deadline=None)
@given(random_dags())
def test_edges_property(case: tuple[list[str], Any, Any]) -> None:
    declared, edges, _ = case
    dag = build(declared, edges)
    assert sorted(dag.edges()) == sorted(edges)
    for tid, task in dag.tasks.items():
        assert task.upstream_ids == {u for u, d in edges if d == tid}
        assert task.downstream_ids == {d for u, d in edges if u == tid}


@settings(max_examples=50, deadline=None)
@given(random_dags(), st.data())
def test_any_back_edge_is_refused(case: tuple[list[str], Any, Any], data: st.DataObject) -> None:
    declared, edges, _ = case
    if not edges:
        return
    dag = build(declared, edges)
    up, down = data.draw(st.sampled_from(edges))
    with pytest.raises(DagDefinitionError, match=f"cycle: {up} -> .*{down} -> {up}"):
        dag.tasks[down] >> dag.tasks[up]
    assert sorted(dag.edges()) == sorted(edges)


# --- describe and fingerprint -----------------------------------------------------------------


def build_reference(**changes: Any) -> DAG:
    """A DAG with fan-in and fan-out, so set/dict iteration order would show in a bad hash."""
    dag = DAG(
        "reference",
        schedule=changes.pop("schedule", "@daily"),
        start_date=pendulum.datetime(2016, 1, 1, tz="Europe/Amsterdam"),
        default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
        description=changes.pop("description", "the reference DAG"),
    )
    sources = [dag.add_task(f"source_{i}", noop) for i in range(6)]
    join = dag.add_task("join", noop, **changes.pop("join_options", {"pool": "db"}))
    sinks = [dag.add_task(f"sink_{i}", noop, priority_weight=i) for i in range(4)]
    sources >> join >> sinks
    return dag


def test_describe_lists_tasks_edges_and_options() -> None:
    dag = make_dag("shown", description="what it does")
    a, b = add(dag, "a", "b")
    a >> b
    shown = dag.describe()
    json.dumps(shown)  # JSON-ready
    assert shown["dag_id"] == "shown"
    assert shown["description"] == "what it does"
    assert isinstance(shown["schedule"], str)
    assert shown["timezone"] == "UTC"
    assert [t["task_id"] for t in shown["tasks"]] == ["a", "b"]
    assert shown["tasks"][1]["upstream"] == ["a"]
    assert shown["tasks"][0]["options"]["trigger_rule"] == "all_success"
    assert shown["tasks"][0]["options"]["retry_delay"] == 300.0
    assert shown["edges"] == [["a", "b"]]


def test_fingerprint_is_stable_across_identical_builds() -> None:
    first, second = build_reference().fingerprint, build_reference().fingerprint
    assert first == second
    assert len(first) >= 16


def test_fingerprint_is_stable_across_processes_and_hash_seeds() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_dag; "
        "print(test_dag.build_reference().fingerprint)"
    )
    here = build_reference().fingerprint
    for seed in ("0", "1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).parent)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert out.stdout.strip() == here, f"PYTHONHASHSEED={seed}: {out.stderr}"


def test_fingerprint_changes_with_an_edge() -> None:
    dag = build_reference()
    before = dag.fingerprint
    dag.tasks["source_0"] >> dag.tasks["sink_3"]
    assert dag.fingerprint != before


def test_fingerprint_changes_with_an_option() -> None:
    base = build_reference().fingerprint
    assert build_reference(join_options={"pool": "other"}).fingerprint != base
    assert build_reference(join_options={"pool": "db", "retries": 2}).fingerprint != base
    assert build_reference(join_options={"pool": "db", "trigger_rule": "all_done"}).fingerprint != (
        base
    )


def test_fingerprint_changes_with_the_schedule() -> None:
    assert build_reference(schedule="@hourly").fingerprint != build_reference().fingerprint


def test_fingerprint_changes_when_a_task_is_added_or_renamed() -> None:
    grown = build_reference()
    grown.add_task("extra", noop)
    assert grown.fingerprint != build_reference().fingerprint

    def pair(second: str) -> str:
        dag = make_dag()
        first, other = add(dag, "a", second)
        first >> other
        return dag.fingerprint

    assert pair("b") == pair("b")
    assert pair("b") != pair("c")


def test_fingerprint_ignores_the_description() -> None:
    assert build_reference(description="reworded").fingerprint == build_reference().fingerprint


def test_fingerprint_ignores_declaration_order() -> None:
    forward, backward = make_dag(), make_dag()
    for dag, ids in ((forward, ["a", "b", "c"]), (backward, ["c", "b", "a"])):
        tasks = {tid: dag.add_task(tid, noop) for tid in ids}
        tasks["a"] >> [tasks["b"], tasks["c"]]
    assert forward.topological_order() != backward.topological_order()
    assert forward.fingerprint == backward.fingerprint


# --- the example DAGs -------------------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", DAGS_FOLDER / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_bash_operator_has_airflows_shape() -> None:
    dag = load_example("example_bash_operator").dag
    assert dag.dag_id == "example_bash_operator"
    assert dag.start_date == pendulum.datetime(2016, 1, 1, tz="UTC")
    assert len(dag.tasks) == 6
    assert edge_set(dag) == {
        ("runme_0", "run_after_loop"),
        ("runme_1", "run_after_loop"),
        ("runme_2", "run_after_loop"),
        ("run_after_loop", "run_this_last"),
        ("also_run_this", "run_this_last"),
    }


def test_example_bash_operator_tasks_run(capsys: pytest.CaptureFixture[str]) -> None:
    dag = load_example("example_bash_operator").dag
    for tid in dag.topological_order():
        dag.tasks[tid](make_context(dag.dag_id, tid, "2016-01-02"))
    out = capsys.readouterr().out
    assert "example_bash_operator__runme_1__20160102" in out
    assert "example_bash_operator__run_this_last__20160102" in out


def test_example_etl_shape_and_options() -> None:
    dag = load_example("example_etl").dag
    assert dag.dag_id == "example_etl"
    assert dag.timezone.name == "Europe/Amsterdam"
    assert edge_set(dag) == {
        *(("extract", f"transform_{t}") for t in ("orders", "refunds", "signups")),
        *((f"transform_{t}", "load") for t in ("orders", "refunds", "signups")),
        ("load", "report"),
    }
    extract, load = dag.tasks["extract"].options, dag.tasks["load"].options
    assert (extract.retries, extract.retry_exponential_backoff) == (2, True)
    assert (load.pool, load.pool_slots) == ("etl_db", 2)


def test_example_etl_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKFILL_HOME", str(tmp_path))
    dag = load_example("example_etl").dag

    def run_all(ds: str) -> dict[str, Any]:
        for tid in dag.topological_order():
            dag.tasks[tid](make_context(dag.dag_id, tid, ds, run_id=f"r_{ds}"))
        result: dict[str, Any] = json.loads(
            (tmp_path / "etl_demo" / ds / "result.json").read_text()
        )
        return result

    first = run_all("2024-03-31")
    assert first["ds"] == "2024-03-31"
    assert set(first["totals"]) == {"orders", "refunds", "signups"}
    raw = json.loads((tmp_path / "etl_demo" / "2024-03-31" / "raw" / "orders.json").read_text())
    assert first["totals"]["orders"] == {
        "rows": len(raw),
        "amount": sum(row["amount"] for row in raw),
    }
    assert "ETL report for 2024-03-31" in capsys.readouterr().out
    assert run_all("2024-03-31")["totals"] == first["totals"]  # deterministic, idempotent
    assert run_all("2024-04-01")["totals"] != first["totals"]  # data depends on the date
    assert not list(tmp_path.rglob(".*.tmp"))


def test_example_etl_conf_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_HOME", str(tmp_path))
    dag = load_example("example_etl").dag
    flaky = {"fail_first_try": True}

    def run(task_id: str, **context: Any) -> None:
        dag.tasks[task_id](make_context(dag.dag_id, task_id, "2024-01-01", **context))

    with pytest.raises(ConnectionError):
        run("extract", conf=flaky)
    run("extract", conf=flaky, try_number=2)
    assert (tmp_path / "etl_demo" / "2024-01-01" / "raw" / "orders.json").exists()
    with pytest.raises(Skip):
        run("report", conf={"skip_report": True})


def test_a_timezone_that_would_lose_dst_is_refused() -> None:
    from dateutil.tz import gettz

    with pytest.raises(DagDefinitionError, match=r"timezone .* is not supported; use pendulum"):
        DAG(
            "dst_losing",
            schedule="@daily",
            start_date=datetime(2024, 7, 1, tzinfo=gettz("America/New_York")),
        )
