"""Airflow's `ds`-style template variables on the Context, and the DAG's `params`.

Pure and fast: contexts are built with `context_for` from intervals the DAG's
own schedule expands, as the worker builds them from its claim. Dates are read
on the DAG's timezone's wall clock (backfill.model.macros says where Airflow,
which reads them in UTC, differs).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pendulum
import pytest
from pendulum.tz.timezone import Timezone

from backfill import DAG, Context
from backfill.model.errors import DagDefinitionError
from backfill.model.macros import context_for
from backfill.model.params import merge

AMS = pendulum.timezone("Europe/Amsterdam")  # clocks go forward 2024-03-31, back 2024-10-27
NY = pendulum.timezone("America/New_York")  # clocks go forward 2024-03-10 at 02:00


def noop(ctx: Context) -> None:
    pass


def make_dag(
    schedule: str | timedelta,
    *,
    tz: Timezone = AMS,
    start: tuple[int, int, int] = (2024, 1, 1),
    params: dict[str, Any] | None = None,
) -> DAG:
    dag = DAG("d", schedule=schedule, start_date=pendulum.datetime(*start, tz=tz), params=params)
    dag.add_task("t", noop)
    return dag


def contexts(dag: DAG, start: datetime, end: datetime, **conf: Any) -> list[Context]:
    """The Context of task `t` on every logical date in [start, end], as a worker builds it."""
    return [
        context_for(
            dag,
            task_id="t",
            run_id=f"backfill__{interval.logical_date.isoformat()}",
            logical_date=interval.logical_date,
            data_interval_start=interval.start,
            data_interval_end=interval.end,
            try_number=1,
            conf=conf,
        )
        for interval in dag.schedule.intervals(pendulum.instance(start), pendulum.instance(end))
    ]


def the_context(dag: DAG, when: datetime, **conf: Any) -> Context:
    [ctx] = contexts(dag, when, when, **conf)
    return ctx


def local(tz: Timezone, *fields: int) -> pendulum.DateTime:
    return pendulum.datetime(*fields, tz=tz)  # type: ignore[arg-type]


# --- the date variables -----------------------------------------------------------------


def test_daily_across_the_spring_change_in_amsterdam() -> None:
    days = contexts(make_dag("@daily"), local(AMS, 2024, 3, 30), local(AMS, 2024, 4, 1))
    assert [c.ds for c in days] == ["2024-03-30", "2024-03-31", "2024-04-01"]
    assert [c.ds_nodash for c in days] == ["20240330", "20240331", "20240401"]
    assert [c.prev_ds for c in days] == ["2024-03-29", "2024-03-30", "2024-03-31"]
    assert [c.prev_ds_nodash for c in days] == ["20240329", "20240330", "20240331"]
    assert [c.next_ds for c in days] == ["2024-03-31", "2024-04-01", "2024-04-02"]
    assert [c.next_ds_nodash for c in days] == ["20240331", "20240401", "20240402"]
    assert [c.ts for c in days] == [
        "2024-03-30T00:00:00+01:00",
        "2024-03-31T00:00:00+01:00",
        "2024-04-01T00:00:00+02:00",
    ]
    assert [c.ts_nodash for c in days] == ["20240330T000000", "20240331T000000", "20240401T000000"]
    change = days[1]  # the 23-hour day
    assert change.data_interval_end - change.data_interval_start == timedelta(hours=23)
    # Airflow would say 2024-03-30 for all of these: it formats the UTC instant.
    assert change.logical_date.isoformat() == "2024-03-30T23:00:00+00:00"


def test_the_data_interval_is_in_the_dags_timezone_and_the_logical_date_in_utc() -> None:
    ctx = the_context(make_dag("@daily"), local(AMS, 2024, 3, 31))
    assert ctx.data_interval_start.timezone_name == "Europe/Amsterdam"
    assert ctx.data_interval_end.timezone_name == "Europe/Amsterdam"
    assert ctx.data_interval_start.isoformat() == "2024-03-31T00:00:00+01:00"
    assert ctx.data_interval_end.isoformat() == "2024-04-01T00:00:00+02:00"
    assert ctx.logical_date.timezone_name == "UTC"
    assert ctx.data_interval_start == ctx.logical_date  # the same instant
    assert isinstance(ctx.data_interval_start, pendulum.DateTime)


def test_a_date_that_is_another_day_in_utc_is_named_by_the_dags_wall_clock() -> None:
    tokyo = pendulum.timezone("Asia/Tokyo")
    ctx = the_context(make_dag("@daily", tz=tokyo), local(tokyo, 2024, 1, 1))
    assert ctx.logical_date.to_date_string() == "2023-12-31"  # 15:00 UTC the day before
    assert (ctx.ds, ctx.ds_nodash) == ("2024-01-01", "20240101")
    assert ctx.ts == "2024-01-01T00:00:00+09:00"
    assert (ctx.prev_ds, ctx.next_ds) == ("2023-12-31", "2024-01-02")
    assert ctx.ts[:10] == ctx.ds


def test_hourly_across_the_spring_gap_and_the_autumn_repeat() -> None:
    dag = make_dag("@hourly")
    spring = contexts(dag, local(AMS, 2024, 3, 31, 0), local(AMS, 2024, 3, 31, 3))
    # 02:00 does not exist that night: the hour after 01:00 is 03:00.
    assert [c.ts for c in spring] == [
        "2024-03-31T00:00:00+01:00",
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
    ]
    assert [c.prev_ds for c in spring] == ["2024-03-30", "2024-03-31", "2024-03-31"]
    assert [c.next_ds for c in spring] == ["2024-03-31"] * 3
    autumn = contexts(dag, local(AMS, 2024, 10, 27, 1), local(AMS, 2024, 10, 27, 3))
    # 02:00 happens twice: two runs, the same ds_nodash and ts_nodash, told apart by ts.
    assert [c.ts for c in autumn] == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]
    assert {c.ts_nodash for c in autumn[1:3]} == {"20241027T020000"}
    assert {c.ds for c in autumn} == {"2024-10-27"}


def test_hourly_prev_and_next_cross_midnight() -> None:
    dag = make_dag("@hourly")
    [first] = contexts(dag, local(AMS, 2024, 6, 1, 0), local(AMS, 2024, 6, 1, 0))
    [last] = contexts(dag, local(AMS, 2024, 6, 1, 23), local(AMS, 2024, 6, 1, 23))
    assert (first.prev_ds, first.ds, first.next_ds) == ("2024-05-31", "2024-06-01", "2024-06-01")
    assert (last.prev_ds, last.ds, last.next_ds) == ("2024-06-01", "2024-06-01", "2024-06-02")


def test_a_cron_time_the_clocks_skip_runs_after_the_jump() -> None:
    dag = make_dag("30 2 * * *", tz=NY)
    days = contexts(dag, local(NY, 2024, 3, 9), local(NY, 2024, 3, 11, 23))
    assert [c.ts for c in days] == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",  # 02:30 does not exist: the first instant after the jump
        "2024-03-11T02:30:00-04:00",
    ]
    assert [c.prev_ds for c in days] == ["2024-03-08", "2024-03-09", "2024-03-10"]
    assert [c.next_ds for c in days] == ["2024-03-10", "2024-03-11", "2024-03-12"]
    assert [c.ts_nodash for c in days] == ["20240309T023000", "20240310T030000", "20240311T023000"]


def test_monthly_and_weekday_crons_name_their_own_ticks() -> None:
    monthly = the_context(make_dag("@monthly"), local(AMS, 2024, 3, 1))
    assert (monthly.prev_ds, monthly.ds, monthly.next_ds) == (
        "2024-02-01",
        "2024-03-01",
        "2024-04-01",
    )
    weekdays = make_dag("0 6 * * 1-5")  # a Monday's previous run is the Friday before
    monday = the_context(weekdays, local(AMS, 2024, 4, 1, 6))
    assert (monday.prev_ds, monday.next_ds) == ("2024-03-29", "2024-04-02")


def test_a_timedelta_schedule_steps_in_absolute_time_from_an_unaligned_start() -> None:
    dag = make_dag(timedelta(hours=12))
    runs = contexts(dag, local(AMS, 2024, 3, 30, 19), local(AMS, 2024, 3, 31, 21))
    # 12 hours of real time: across the change the wall clock moves 13.
    assert [c.ts for c in runs] == [
        "2024-03-30T19:00:00+01:00",
        "2024-03-31T08:00:00+02:00",
        "2024-03-31T20:00:00+02:00",
    ]
    assert [c.prev_ds for c in runs] == ["2024-03-30", "2024-03-30", "2024-03-31"]
    assert [c.next_ds for c in runs] == ["2024-03-31", "2024-03-31", "2024-04-01"]


def test_the_dags_first_date_has_the_tick_before_start_date_as_prev_ds() -> None:
    # Airflow's prev_ds is the timetable's previous tick, not bounded by start_date
    # (taskinstance.get_template_context -> timetable._get_prev): never None here.
    daily = the_context(make_dag("@daily", start=(2024, 1, 1)), local(AMS, 2024, 1, 1))
    assert (daily.prev_ds, daily.prev_ds_nodash) == ("2023-12-31", "20231231")
    delta = make_dag(timedelta(days=2), start=(2024, 1, 1))
    first = the_context(delta, local(AMS, 2024, 1, 1))
    assert (first.prev_ds, first.ds, first.next_ds) == ("2023-12-30", "2024-01-01", "2024-01-03")


def test_nodash_of_a_missing_date_is_none() -> None:
    ctx = the_context(make_dag("@daily"), local(AMS, 2024, 1, 1))
    gone = Context(**{**vars(ctx), "prev_ds": None, "next_ds": None})
    assert (gone.prev_ds_nodash, gone.next_ds_nodash) == (None, None)


# --- params ------------------------------------------------------------------------------

PARAMS = {"table": "events", "limit": 10, "options": {"dry": True, "depth": 2}}


def test_params_default_to_the_dags_and_conf_overrides_top_level_keys() -> None:
    dag = make_dag("@daily", params=PARAMS)
    plain = the_context(dag, local(AMS, 2024, 1, 2))
    assert (plain.params, plain.conf) == (PARAMS, {})
    conf = {"limit": 99, "options": {"dry": False}, "extra": [1, 2]}
    ctx = the_context(dag, local(AMS, 2024, 1, 2), **conf)
    # Airflow's shallow params.update(dag_run.conf): a conf value replaces the whole value.
    assert ctx.params == {
        "table": "events",
        "limit": 99,
        "options": {"dry": False},
        "extra": [1, 2],
    }
    assert ctx.conf == conf  # conf itself is unchanged


def test_a_dag_without_params_sees_the_conf_as_params() -> None:
    ctx = the_context(make_dag("@daily"), local(AMS, 2024, 1, 2), limit=5)
    assert (ctx.params, ctx.conf) == ({"limit": 5}, {"limit": 5})


def test_a_task_mutating_its_params_changes_nothing_else() -> None:
    dag = make_dag("@daily", params=PARAMS)
    first = the_context(dag, local(AMS, 2024, 1, 2))
    first.params["options"]["dry"] = False
    first.params["new"] = 1
    assert dag.params == PARAMS
    assert the_context(dag, local(AMS, 2024, 1, 3)).params == PARAMS
    conf = {"nested": {"a": 1}}
    merged = merge(dag.params, conf)
    merged["nested"]["a"] = 2
    assert conf == {"nested": {"a": 1}}


def test_params_are_a_json_copy_of_what_the_author_passed() -> None:
    given: dict[str, Any] = {"pair": (1, 2), "inner": {"k": "v"}}
    dag = make_dag("@daily", params=given)
    given["inner"]["k"] = "changed"
    assert dag.params == {"pair": [1, 2], "inner": {"k": "v"}}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([("a", 1)], "params must be a dict of JSON values, got list"),
        ({1: "a"}, "params keys must be strings, got 1"),
        ({"when": pendulum.datetime(2024, 1, 1)}, "params['when'] is not JSON-serialisable"),
        ({"s": {1, 2}}, "params['s'] is not JSON-serialisable"),
        ({"x": math.nan}, "params['x'] is not JSON-serialisable"),
        ({"deep": {"f": noop}}, "params['deep'] is not JSON-serialisable"),
    ],
)
def test_params_that_are_not_a_json_object_are_refused_when_declared(
    params: Any, fragment: str
) -> None:
    with pytest.raises(DagDefinitionError) as caught:
        make_dag("@daily", params=params)
    assert str(caught.value).startswith("DAG 'd': ")
    assert fragment in str(caught.value)


def test_params_are_part_of_the_dags_description_and_fingerprint() -> None:
    bare = make_dag("@daily")
    assert "params" not in bare.describe()
    # A DAG without params hashes as before params existed: its backfills still run.
    assert bare.fingerprint == "d05f1a8786d85794"
    assert make_dag("@daily", params={}).fingerprint == bare.fingerprint
    with_params = make_dag("@daily", params={"a": 1, "b": 2})
    assert with_params.describe()["params"] == {"a": 1, "b": 2}
    assert with_params.fingerprint != bare.fingerprint
    assert make_dag("@daily", params={"b": 2, "a": 1}).fingerprint == with_params.fingerprint
    assert make_dag("@daily", params={"a": 1, "b": 3}).fingerprint != with_params.fingerprint
