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

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from support.rows import every_row
from support.stack import utc
from support.waiting import wait_until

from .conftest import ENDED, LiveSite

BACKENDS = ("sqlite", "postgresql")
DAG_ID, START, END = "flower_small", "2016-01-01", "2016-01-02"
TASKS = ("extract", "transform_0", "transform_1", "broken")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def ended(live: LiveSite) -> int:
    """The id of the module's backfill, driven to its end (failed: `broken` fails)."""
    backfill_id = live.create(DAG_ID, START, END)
    assert live.wait_state(backfill_id, *ENDED) == "failed"
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
    assert {"id": ended, "dag_id": DAG_ID, "state": "failed"}.items() <= listed[-1].items()
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
    assert ti.pop("siblings") == []  # not a mapped task
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


def held(day: str) -> tuple[str, str, Any, int]:
    """The first try of `ha_gate`'s gated task on `day`: a ledger key, for `open_gate`."""
    return ("ha_gate", "held", utc(day), 1)


@pytest.fixture
def gates(live: LiveSite) -> Iterator[list[str]]:
    """Days of `ha_gate` whose gate opens at the end of the test, whatever happened: a
    failed test must not leave a try holding a worker slot from the module's next."""
    days: list[str] = []
    yield days
    for day in days:
        live.stack.open_gate(held(day))


def wait_counts(live: LiveSite, backfill_id: int, **wanted: int) -> None:
    """Until backfill `backfill_id` has these many TIs in these states."""

    def reached() -> bool:
        counts = get(live, f"/backfills/{backfill_id}")["task_instances"]
        return all(counts[state] == n for state, n in wanted.items())

    wait_until(reached, timeout=60, what=f"backfill {backfill_id} to have TIs {wanted}")


# --- bad input: a 4xx naming the problem, and nothing written ---------------------------


def refused(
    api: httpx.Client, method: str, path: str, status: int, *fragments: str, **kw: Any
) -> None:
    """`method path` answers `status` with a JSON error naming every fragment."""
    answer = api.request(method, f"/api/v1{path}", **kw)
    assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
    error = answer.json()["error"]
    for fragment in fragments:
        assert fragment in error, f"{method} {path}: {error}"
    assert "Traceback" not in answer.text


def test_bad_reads_are_refused_naming_the_problem(live: LiveSite, ended: int) -> None:
    ti = f"/backfills/{ended}/task_instances"
    with live.api() as api:
        refused(api, "GET", "/backfills/424242", 404, "424242")
        refused(api, "GET", "/backfills/abc", 422, "backfill_id")
        refused(api, "GET", "/backfills/424242/task_instances", 404, "424242")
        refused(api, "GET", ti, 400, "notadate", params={"start": "notadate"})
        refused(api, "GET", ti, 400, "after", params={"start": END, "end": START})
        refused(api, "GET", ti, 422, "limit", params={"limit": -1})
        refused(api, "GET", ti, 422, "state", params={"state": "exploded"})
        refused(api, "GET", "/backfills", 422, "state", params={"state": "exploded"})
        refused(api, "GET", f"{ti}/nosuchtask/{START}", 404, "nosuchtask")
        refused(api, "GET", f"{ti}/nosuchtask/{START}/logs", 404, "nosuchtask")
        refused(api, "GET", f"{ti}/broken/2015-06-01/logs", 404, "2015-06-01")
        refused(api, "GET", f"{ti}/broken/{START}/logs", 400, "no try 5", params={"try_number": 5})
        refused(
            api, "GET", f"{ti}/broken/{START}/logs", 422, "try_number", params={"try_number": 0}
        )
        refused(api, "GET", "/nothing/here", 404, "no such")


def test_a_bad_create_is_refused_and_writes_nothing(live: LiveSite, ended: int) -> None:
    ok = {"dag_id": DAG_ID, "start": "2016-02-01", "end": "2016-02-02"}
    bad: list[tuple[dict[str, Any], int, tuple[str, ...]]] = [
        ({**ok, "dag_id": "no_such_dag"}, 400, ("no_such_dag",)),
        ({**ok, "start": "2016-02-03"}, 400, ("2016-02-03", "after")),
        ({**ok, "start": "someday"}, 400, ("someday",)),
        ({**ok, "conf": {"blob": "x" * 70_000}}, 400, ("conf",)),
        ({**ok, "conf": [1, 2]}, 422, ("conf",)),
        ({**ok, "conf": "{}"}, 422, ("conf",)),
        ({**ok, "surprise": 1}, 422, ("surprise",)),
        ({**ok, "mark_success": "yes"}, 422, ("mark_success",)),
        ({**ok, "max_active_runs": "3"}, 422, ("max_active_runs",)),
        ({"start": ok["start"], "end": ok["end"]}, 422, ("dag_id",)),
        ({**ok, "reprocess": "sometimes"}, 400, ("sometimes",)),
        ({**ok, "task_regex": "^zzz"}, 400, ("^zzz",)),
        ({**ok, "task_regex": "("}, 400, ("(",)),
        ({**ok, "pool": "no_such_pool"}, 400, ("no_such_pool",)),
    ]
    before = every_row(live.db)
    with live.api() as api:
        for body, status, fragments in bad:
            refused(api, "POST", "/backfills", status, *fragments, json=body)
        refused(api, "POST", "/backfills", 422, content=b"{not json", headers=JSON)
    assert every_row(live.db) == before


def test_a_bad_change_of_state_or_clear_is_refused_and_writes_nothing(
    live: LiveSite, ended: int, gates: list[str]
) -> None:
    gates.append("2016-03-01")
    cancelled = live.create("ha_gate", "2016-03-01", "2016-03-01")
    with live.api() as api:
        assert api.post(f"/api/v1/backfills/{cancelled}/cancel").status_code == 200
        live.stack.open_gate(held("2016-03-01"))  # if its try started, it ends
        live.wait_settled(cancelled)
        before = every_row(live.db)
        refused(api, "POST", f"/backfills/{ended}/pause", 409, "failed")
        refused(api, "POST", f"/backfills/{ended}/resume", 409, "failed")
        refused(api, "POST", f"/backfills/{ended}/cancel", 409, "failed")
        for action in ("pause", "resume", "cancel"):
            refused(api, "POST", f"/backfills/{cancelled}/{action}", 409, "cancelled")
            refused(api, "POST", f"/backfills/424242/{action}", 404, "424242")
        refused(api, "POST", f"/backfills/{ended}/cancel", 422, "abort", json={"abort": "yes"})
        refused(api, "POST", "/backfills/424242/clear", 404, "424242", json={})
        clear = f"/backfills/{ended}/clear"
        refused(api, "POST", clear, 400, "no task instance", json={"states": ["up_for_retry"]})
        refused(api, "POST", clear, 400, "exploded", json={"states": ["exploded"]})
        refused(api, "POST", clear, 400, "^zzz", json={"task_regex": "^zzz"})
        refused(api, "POST", clear, 400, "someday", json={"start": "someday"})
        refused(api, "POST", clear, 422, "surprise", json={"surprise": True})
        refused(api, "POST", clear, 422, "downstream", json={"downstream": "yes"})
    assert every_row(live.db) == before


def test_resuming_a_running_backfill_is_refused(live: LiveSite, gates: list[str]) -> None:
    gates.append("2016-04-01")
    running = live.create("ha_gate", "2016-04-01", "2016-04-01")
    wait_counts(live, running, running=1)  # `held` waits for its gate: nothing moves
    tis = f"/api/v1/backfills/{running}/task_instances"
    with live.api() as api:
        states = [t["state"] for t in api.get(tis).json()]
        refused(api, "POST", f"/backfills/{running}/resume", 409, "running", "paused")
        assert api.get(f"/api/v1/backfills/{running}").json()["state"] == "running"
        assert [t["state"] for t in api.get(tis).json()] == states
        assert api.post(f"/api/v1/backfills/{running}/cancel").status_code == 200
    live.stack.open_gate(held("2016-04-01"))
    live.wait_settled(running)  # leaves nothing running for the module's next test


# --- writes --------------------------------------------------------------------------


def test_create_makes_the_backfill_its_dry_run_plans(live: LiveSite) -> None:
    days = ("2016-05-01", "2016-05-02")
    body = {
        "dag_id": DAG_ID,
        "start": days[0],
        "end": days[1],
        "task_regex": "^(extract|transform)",
        "conf": {"table": "events"},
        "max_active_runs": 1,
    }
    flags = ("--task-regex", "^(extract|transform)", "--conf", '{"table": "events"}')
    planned = live.cli_json(
        "create", DAG_ID, "-s", days[0], "-e", days[1], *flags,
        "--max-active-runs", "1", "--dry-run",
    )  # fmt: skip
    before = every_row(live.db)
    with live.api() as api:
        dry = api.post("/api/v1/backfills", json={**body, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json() == planned
        assert every_row(live.db) == before
        assert [r["action"] for r in planned["runs"]] == ["run", "run"]

        made = api.post("/api/v1/backfills", json=body)
        assert made.status_code == 201, made.text
        backfill_id = made.json()["id"]
        assert made.headers["location"] == f"/api/v1/backfills/{backfill_id}"
        told = api.get(made.headers["location"]).json()
    assert (told["dag_id"], told["start"][:10], told["end"][:10]) == (DAG_ID, *days)
    assert told["conf"] == {"table": "events"}
    assert told["options"]["task_regex"] == "^(extract|transform)"
    assert live.wait_state(backfill_id, *ENDED) == "success"
    live.wait_settled(backfill_id)
    assert get(live, f"/backfills/{backfill_id}") == live.cli_json("status", str(backfill_id))


def test_pause_resume_and_cancel_change_the_state(live: LiveSite, gates: list[str]) -> None:
    days = ("2016-06-01", "2016-06-02", "2016-06-03")
    gates.extend([*days, "2016-06-04"])
    drained = live.create("ha_gate", days[0], days[-1])
    wait_counts(live, drained, running=2, queued=1)  # the worker has 2 slots
    each = f"/api/v1/backfills/{drained}"
    with live.api() as api:
        for action, state in (("pause", "paused"), ("resume", "running")):
            done = api.post(f"{each}/{action}")
            assert done.status_code == 200, done.text
            assert done.json() == {"id": drained, "state": state}
            assert api.get(each).json()["state"] == state
        cancel = api.post(f"{each}/cancel")
        assert cancel.status_code == 200, cancel.text
        assert cancel.json() == {
            "id": drained, "state": "cancelled", "abort": False, "withdrawn": 1, "stopped": 0,
        }  # fmt: skip
        assert api.get(each).json()["state"] == "cancelled"
        for day in days:
            live.stack.open_gate(held(day))  # the running tries finish and are recorded
        live.wait_settled(drained)
        counts = api.get(each).json()["task_instances"]
        assert (counts["success"], counts["scheduled"] + counts["none"]) == (2, 4)

        aborted = live.create("ha_gate", "2016-06-04", "2016-06-04")
        wait_counts(live, aborted, running=1)
        stop = api.post(f"/api/v1/backfills/{aborted}/cancel", json={"abort": True})
        assert stop.status_code == 200, stop.text
        assert {k: stop.json()[k] for k in ("state", "abort", "withdrawn", "stopped")} == {
            "state": "cancelled", "abort": True, "withdrawn": 0, "stopped": 1,
        }  # fmt: skip
        live.wait_settled(aborted)
        (ti,) = get(live, f"/backfills/{aborted}/task_instances", task_regex="^held$")
    assert ti["state"] == "failed"
    assert "cancelled" in ti["last_error"].lower()


def test_clear_of_a_failed_task_instance_runs_it_again(live: LiveSite) -> None:
    day = "2016-07-01"
    backfill_id = live.create(DAG_ID, day, day)
    assert live.wait_state(backfill_id, *ENDED) == "failed"
    live.wait_settled(backfill_id)
    asked = {"task_regex": "^broken$", "states": ["failed"]}
    each = f"/api/v1/backfills/{backfill_id}"
    before = every_row(live.db)
    with live.api() as api:
        dry = api.post(f"{each}/clear", json={**asked, "dry_run": True})
        assert dry.status_code == 200, dry.text
        shown = live.cli_json(
            "clear", str(backfill_id), "--task-regex", "^broken$", "--state", "failed", "--dry-run"
        )
        assert dry.json() == shown
        assert every_row(live.db) == before
        done = api.post(f"{each}/clear", json=asked)
    assert done.status_code == 200, done.text
    cleared = done.json()
    assert [(t["task_id"], t["state"]) for t in cleared["selected"]] == [("broken", "failed")]
    assert (cleared["cleared"], cleared["backfill_reopened"]) == (1, True)
    assert live.wait_state(backfill_id, *ENDED) == "failed"  # broken fails again
    live.wait_settled(backfill_id)
    ti = get(live, f"/backfills/{backfill_id}/task_instances/broken/{day}")
    assert [(t["try_number"], t["state"]) for t in ti["tries"]] == [(1, "failed"), (2, "failed")]
    starts = [(e.task_id, e.try_number) for e in live.stack.ledger.entries("start") if e.ds == day]
    assert sorted(starts) == [("broken", 1), ("broken", 2), *((t, 1) for t in TASKS[:3])]
    log = get(live, f"/backfills/{backfill_id}/task_instances/broken/{day}/logs")
    assert log["try_number"] == 2
    assert log == live.cli_json("logs", str(backfill_id), "broken", "-d", day)
