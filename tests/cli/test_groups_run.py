"""Task groups end to end: a grouped DAG run by `backfill run` on real local workers.

The group's tasks run under their prefixed ids, after the group's upstream and
before its downstream (edges on a group link its roots and leaves), `--task-regex`
selects a group by its prefix, and `dags show` lists the groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support.harness import Harness, embedded_harness

GROUPED_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("grouped", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def work(ctx: Context) -> None:
    print(ctx.task_id)


start = dag.add_task("start", work)
with dag.task_group("extract") as extract:
    orders = dag.add_task("orders", work)
    dag.add_task("customers", work)
    orders >> dag.add_task("orders_clean", work)
end = dag.add_task("end", work)
start >> extract >> end
"""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as harness:
        (harness.dags / "grouped_dag.py").write_text(GROUPED_DAG)
        yield harness


def tis(h: Harness, backfill_id: str) -> dict[str, dict[str, object]]:
    done = h.cli("tasks", backfill_id, "--limit", "0", "-o", "json", timeout=60)
    assert done.returncode == 0, done.stderr
    return {ti["task_id"]: ti for ti in json.loads(done.stdout)}


def at(ti: dict[str, object], key: str) -> datetime:
    return datetime.fromisoformat(str(ti[key]))


def test_a_grouped_dag_runs_in_its_groups_order_and_a_regex_selects_a_group(h: Harness) -> None:
    run = h.cli("run", "grouped", "-s", "2024-01-01", "-e", "2024-01-01", "--output", "json")
    assert run.returncode == 0, run.stderr
    found = tis(h, str(json.loads(run.stdout)["id"]))
    assert set(found) == {
        "start", "extract.orders", "extract.customers", "extract.orders_clean", "end"
    }  # fmt: skip
    assert {ti["state"] for ti in found.values()} == {"success"}
    for root in ("extract.orders", "extract.customers"):
        assert at(found[root], "start_date") >= at(found["start"], "end_date")
    assert at(found["extract.orders_clean"], "start_date") >= at(
        found["extract.orders"], "end_date"
    )
    for leaf in ("extract.orders_clean", "extract.customers"):
        assert at(found["end"], "start_date") >= at(found[leaf], "end_date")

    again = h.cli(
        "run", "grouped", "-s", "2024-01-02", "-e", "2024-01-02",
        "--task-regex", r"^extract\.", "--output", "json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert set(tis(h, str(json.loads(again.stdout)["id"]))) == {
        "extract.orders", "extract.customers", "extract.orders_clean"
    }  # fmt: skip

    shown = h.cli("dags", "show", "grouped", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "Task groups" in shown.stdout
    assert "extract.orders_clean" in shown.stdout
    described = json.loads(h.cli("dags", "show", "grouped", "-o", "json", timeout=60).stdout)
    assert described["groups"] == [
        {
            "group_id": "extract",
            "tooltip": "",
            "task_ids": ["extract.orders", "extract.customers", "extract.orders_clean"],
        }
    ]
