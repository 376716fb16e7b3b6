"""The JSON API of `backfill web` (DESIGN section 7) answers what the CLI answers.

One backfill of `flower_small` (two dates: a fan-out that succeeds and a task
that always fails), made by `backfill create` and driven to its end by a
`backfill coordinator` and a real worker, is read through a live `backfill
web` and through the real command line; each answer is compared, parsed, with
the CLI's JSON (DESIGN section 4). Once the backfill has ended nothing in
those answers moves with time, so they must be equal, not merely alike.
Then the OpenAPI document lists every endpoint of section 7, and `/metrics`
counts the backfill's TIs.
"""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from .conftest import LiveSite

BACKENDS = ("sqlite", "postgresql")
DAG_ID, START, END = "flower_small", "2016-01-01", "2016-01-02"
TASKS = ("extract", "transform_0", "transform_1", "broken")


@pytest.fixture(scope="module")
def ended(live: LiveSite) -> int:
    """The id of the module's backfill, driven to its end (failed: `broken` fails)."""
    backfill_id = live.create(DAG_ID, START, END)
    assert live.wait_state(backfill_id, "success", "failed", "cancelled") == "failed"
    return backfill_id


def get(live: LiveSite, path: str, **params: Any) -> Any:
    with live.api() as api:
        answer = api.get(f"/api/v1{path}", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


def test_the_backfills_are_listed_as_backfill_list_lists_them(live: LiveSite, ended: int) -> None:
    listed = get(live, "/backfills")
    assert listed == live.cli_json("list")
    assert [b["id"] for b in listed] == [ended]
    assert listed[0]["state"] == "failed"
    assert get(live, "/backfills", state="failed") == live.cli_json("list", "--state", "failed")
    assert get(live, "/backfills", state="running") == []


def test_a_backfill_is_told_as_backfill_status_tells_it(live: LiveSite, ended: int) -> None:
    told = get(live, f"/backfills/{ended}")
    assert told == live.cli_json("status", str(ended))
    assert told["task_instances"]["failed"] == 2
    assert told["task_instances"]["success"] == 6
    assert {f["task_id"] for f in told["failed"]} == {"broken"}


def test_task_instances_are_listed_as_backfill_tasks_lists_them(live: LiveSite, ended: int) -> None:
    every = get(live, f"/backfills/{ended}/task_instances", limit=0)
    assert every == live.cli_json("tasks", str(ended), "--limit", "0")
    assert sorted((t["task_id"], t["logical_date"][:10]) for t in every) == sorted(
        (task, day) for task in TASKS for day in (START, END)
    )
    paged = get(live, f"/backfills/{ended}/task_instances", limit=3, offset=2)
    assert paged == every[2:5]
    assert paged == live.cli_json("tasks", str(ended), "--limit", "3", "--offset", "2")
    failed = get(live, f"/backfills/{ended}/task_instances", state="failed", task_regex="^br")
    assert failed == live.cli_json("tasks", str(ended), "--state", "failed", "--task-regex", "^br")
    assert [t["task_id"] for t in failed] == ["broken", "broken"]
    one_day = get(live, f"/backfills/{ended}/task_instances", start=END, end=END)
    assert one_day == live.cli_json("tasks", str(ended), "-s", END, "-e", END)
    assert {t["logical_date"][:10] for t in one_day} == {END}


def test_a_log_is_the_one_backfill_logs_prints(live: LiveSite, ended: int) -> None:
    for task_id in ("broken", "extract"):
        path = f"/backfills/{ended}/task_instances/{task_id}/{START}/logs"
        log = get(live, path)
        assert log == live.cli_json("logs", str(ended), task_id, "-d", START)
        assert get(live, path, try_number=1) == log
        assert log["try_number"] == 1
    broken = get(live, f"/backfills/{ended}/task_instances/broken/{START}/logs")
    assert "ValueError: broken on 2016-01-01" in broken["log"]
    assert broken["state"] == "failed"


def test_a_task_instance_is_its_tasks_row_with_its_tries(live: LiveSite, ended: int) -> None:
    rows = live.cli_json("tasks", str(ended), "--task-regex", "^broken$", "-s", START, "-e", START)
    ti = get(live, f"/backfills/{ended}/task_instances/broken/{START}")
    tries = ti.pop("tries")
    assert ti == {**rows[0], "backfill_id": ended}
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed")]


def test_the_openapi_document_lists_every_endpoint_of_the_design(live: LiveSite) -> None:
    document = get(live, "/openapi.json")
    validate(document)
    assert document["openapi"].startswith("3.")
    each = "/api/v1/backfills/{backfill_id}"
    ti = each + "/task_instances/{task_id}/{logical_date}"
    expected = {
        ("/api/v1/backfills", "get"),
        ("/api/v1/backfills", "post"),
        (each, "get"),
        (each + "/task_instances", "get"),
        (ti + "/logs", "get"),
        *((f"{each}/{action}", "post") for action in ("pause", "resume", "cancel", "clear")),
    }
    offered = {(path, method) for path, item in document["paths"].items() for method in item}
    assert expected <= offered, expected - offered


def test_metrics_count_the_task_instances_of_the_backfill(live: LiveSite, ended: int) -> None:
    with live.api() as api:
        scraped = api.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    counts = {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "backfill_task_instances"
        and sample.labels.get("backfill_id") == str(ended)
    }
    assert counts["success"] == 6
    assert counts["failed"] == 2
