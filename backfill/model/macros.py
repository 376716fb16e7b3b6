"""The Context a try's callable receives, with Airflow's `ds`-style template variables.

Pure: no I/O, never now(). Everything is derived from the DAG (its timezone,
schedule and params) and the run (logical date, data interval, conf).

Airflow 2.10's definitions (`airflow/models/taskinstance.py`,
`get_template_context`; the templates reference page), and where we differ:
- `ds`, `ds_nodash`, `ts`, `ts_nodash`: the logical date formatted. Airflow
  formats it in UTC; we format it on the DAG's timezone's wall clock, as `ds`
  always was here (DESIGN section 4), so a daily Europe/Amsterdam run of
  2024-03-31 has `ds` 2024-03-31, not Airflow's 2024-03-30;
- `prev_ds`: the date of the schedule's tick before the logical date
  (`timetable._get_prev`), whether or not a run exists there and even before
  the DAG's start_date: Airflow gives None only for timetables without data
  intervals, which a DAG here never has. Airflow deprecates it;
- `next_ds`: the logical date of the next run after this data interval
  (`next_dagrun_info(data_interval, restricted=False)`), which for cron and
  timedelta schedules is the interval's end; Airflow's deprecation notice
  names `{{ data_interval_end | ds }}` as its replacement. Airflow gives the
  run's own date for a manually triggered run; every run here is a backfill's;
- `data_interval_start` / `data_interval_end`: pendulum DateTimes; Airflow's
  are in UTC, ours in the DAG's timezone (the same instants);
- `params`: the DAG's params with the run's conf on top (`params.merge`), as
  Airflow does with `dag_run_conf_overrides_params`, its default.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import pendulum

from backfill.model.context import Context
from backfill.model.dag import DAG
from backfill.model.params import merge
from backfill.model.schedule import DataInterval, Schedule


def context_for(
    dag: DAG,
    *,
    task_id: str,
    run_id: str,
    logical_date: datetime,
    data_interval_start: datetime,
    data_interval_end: datetime,
    try_number: int,
    map_index: int = -1,
    conf: dict[str, Any] | None = None,
) -> Context:
    """The Context of try `try_number` of `task_id` in the run at `logical_date` (aware)."""
    utc = pendulum.instance(logical_date).in_timezone("UTC")
    local = utc.in_timezone(dag.timezone)
    end = pendulum.instance(data_interval_end).in_timezone(dag.timezone)
    previous = _previous(dag.schedule, utc)  # not bounded by start_date, as in Airflow
    return Context(
        dag_id=dag.dag_id,
        task_id=task_id,
        run_id=run_id,
        logical_date=utc,
        ds=local.to_date_string(),
        ts=local.isoformat(),
        prev_ds=None if previous is None else _ds(previous.logical_date, dag),
        next_ds=end.to_date_string(),
        data_interval_start=pendulum.instance(data_interval_start).in_timezone(dag.timezone),
        data_interval_end=end,
        try_number=try_number,
        map_index=map_index,
        conf=dict(conf or {}),
        params=merge(dag.params, conf or {}),
    )


def _ds(value: pendulum.DateTime, dag: DAG) -> str:
    return value.in_timezone(dag.timezone).to_date_string()


@functools.lru_cache(maxsize=256)
def _previous(schedule: Schedule, logical_date: pendulum.DateTime) -> DataInterval | None:
    """`schedule.previous`, remembered: the tries of one run (a worker runs many of the
    same date) ask for the same one, and a cron schedule walks back to find it (~0.3 ms)."""
    return schedule.previous(logical_date)
