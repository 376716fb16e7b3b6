"""`RunOptions`: one frozen, validated object of policy enums; its JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest

from backfill.errors import UserError
from backfill.planning.run_options import (
    Dependencies,
    DependsOnPast,
    Execution,
    FailurePolicy,
    Order,
    ReprocessPolicy,
    Retries,
    RunOptions,
)

DEFAULTS = {
    "reprocess": "none",
    "conf": {},
    "max_active_runs": None,
    "rerun_failed_tasks": False,
    "on_failure": "stop",
    "execution": "run",
    "order": "forward",
    "depends_on_past": "strict",
    "dependencies": "enforce",
    "retries": "as_declared",
    "task_regex": None,
    "pool": None,
}

EVERYTHING = RunOptions(
    reprocess=ReprocessPolicy.COMPLETED,
    conf={"k": [1, {"n": None}]},
    max_active_runs=4,
    rerun_failed_tasks=True,
    on_failure=FailurePolicy.CONTINUE,
    execution=Execution.MARK_SUCCESS,
    order=Order.BACKWARD,
    depends_on_past=DependsOnPast.IGNORE_FIRST,
    dependencies=Dependencies.IGNORE,
    retries=Retries.DISABLED,
    task_regex="^extract$|load",
    pool="db.small-1",
)


def test_defaults_as_json() -> None:
    assert RunOptions().as_json() == DEFAULTS


def test_every_field_round_trips_through_json() -> None:
    stored = EVERYTHING.as_json()
    assert stored["execution"] == "mark_success"
    assert stored["order"] == "backward"
    assert RunOptions.from_json(stored) == EVERYTHING


def test_from_json_fills_fields_added_later_and_ignores_unknown_ones() -> None:
    # A backfill stored before a field existed reads back with that field's default.
    old = RunOptions.from_json({"reprocess": "failed", "conf": {}, "gone": 1})
    assert old == RunOptions(reprocess=ReprocessPolicy.FAILED)


def test_enum_fields_accept_their_values_and_refuse_others() -> None:
    assert RunOptions.from_json({"on_failure": "continue"}).on_failure is FailurePolicy.CONTINUE
    with pytest.raises(UserError, match="--on-failure must be one of stop, continue, got 'x'"):
        RunOptions.from_json({"on_failure": "x"})
    with pytest.raises(UserError, match="--retries must be one of as_declared, disabled"):
        RunOptions.from_json({"retries": True})


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"task_regex": "("}, "--task-regex '(' is not a regular expression"),
        ({"task_regex": 3}, "--task-regex must be a regular expression, got 3"),
        ({"pool": "two words"}, "--pool must be a pool name"),
        ({"pool": ""}, "--pool must be a pool name"),
        ({"pool": "p" * 251}, "--pool must be a pool name (1 to 250"),
        ({"rerun_failed_tasks": "yes"}, "--rerun-failed-tasks is a flag, got 'yes'"),
        ({"max_active_runs": 0}, "--max-active-runs must be an integer >= 1"),
    ],
)
def test_bad_values_are_refused_when_built(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(UserError) as info:
        RunOptions(**values)
    assert problem in str(info.value)


def test_selects_searches_the_task_id() -> None:
    assert RunOptions().selects("anything")
    options = RunOptions(task_regex="^run|last$")
    assert [
        t for t in ("runme_0", "also_run_this", "run_this_last", "x") if options.selects(t)
    ] == [
        "runme_0",
        "run_this_last",
    ]
    assert RunOptions(task_regex="run").selects("also_run_this")  # re.search, not match


def test_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        EVERYTHING.pool = "other"  # type: ignore[misc]
