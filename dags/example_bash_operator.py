"""Airflow's `example_bash_operator`, rebuilt on backfill.

Shape (6 tasks):

    runme_0 ─┐
    runme_1 ─┼─> run_after_loop ─┐
    runme_2 ─┘                   ├─> run_this_last
    also_run_this ───────────────┘

Every task is tiny and fast: it prints what Airflow's `bash_command`s echo
(the task-instance key) and the context it ran with. Try it with
`backfill run example_bash_operator -s 2016-01-01 -e 2016-01-03`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum

from backfill import DAG, Context

dag = DAG(
    "example_bash_operator",
    schedule="@daily",
    start_date=pendulum.datetime(2016, 1, 1, tz="UTC"),
    max_active_runs=16,
    max_active_tasks=16,
    default_args={"retries": 0, "retry_delay": timedelta(minutes=5)},
    description="Airflow's example_bash_operator: three loop tasks, a join, a side branch.",
)


def ti_key(ctx: Context) -> str:
    """Airflow's `task_instance_key_str`: dag_id__task_id__YYYYMMDD."""
    return f"{ctx.dag_id}__{ctx.task_id}__{ctx.ds.replace('-', '')}"


def echo_key(ctx: Context) -> None:
    """`echo "{{ task_instance_key_str }}"`, plus the rest of the context."""
    print(ti_key(ctx), f"run_id={ctx.run_id}", f"try={ctx.try_number}", f"conf={ctx.conf}")


# Declared in a loop, as in Airflow; every runme_N shares the one callable.
runme = [dag.task(task_id=f"runme_{i}")(echo_key) for i in range(3)]


@dag.task
def run_after_loop(ctx: Context) -> None:
    print(f"echo 1  # {ti_key(ctx)}")


@dag.task
def also_run_this(ctx: Context) -> None:
    print(f"ti_key={ti_key(ctx)}")


@dag.task
def run_this_last(ctx: Context) -> None:
    interval = f"{ctx.data_interval_start.isoformat()} .. {ctx.data_interval_end.isoformat()}"
    print(f"{ti_key(ctx)}: all done for {ctx.logical_date.isoformat()} ({interval})")


runme >> run_after_loop >> run_this_last
also_run_this >> run_this_last
