"""`backfill clear` end to end on the embedded default (DESIGN section 6, Clear).

Real `backfill run` / `resume` drives and a real `backfill worker`; the DAG's
tasks record every execution in the ledger, so "ran again" and "ran once"
are counted, not assumed. What must hold: the selection (task regex, states,
dates, --downstream) is shown and confirmed (or only shown with --dry-run,
writing nothing); cleared TIs keep their try number and get their retries
again; their runs and the backfill reopen and `resume` or a `backfill
coordinator` drives them; a
running TI that is cleared is fenced, its callable stopped, and it runs
again as a new try; nothing matching, or no terminal to ask on without
--yes, is exit 2 with nothing written; the journal passes `backfill audit`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import Harness, embedded_harness
from support.waiting import wait_until

CLEAR_DAG = """
import os, time
from pathlib import Path
import pendulum
from support import ledger
from backfill import DAG, Context

FIXED = Path(os.environ["CLEAR_TEST_DIR"]) / "fixed"
GATE = Path(os.environ["CLEAR_TEST_DIR"]) / "gate"
dag = DAG("clr", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def record(ctx: Context) -> None:
    ledger.record("ran", ctx)


def flaky(ctx: Context) -> None:
    ledger.record("ran", ctx)
    if not FIXED.exists():
        raise ValueError("not fixed yet")


def gated(ctx: Context) -> None:
    ledger.record("started", ctx)
    (GATE.parent / f"gated-{ctx.try_number}.started").touch()
    while ctx.try_number == 1:  # try 1 waits until it is stopped; a later try returns
        time.sleep(0.05)
    ledger.record("ran", ctx)


a, b, c = (dag.add_task(t, record) for t in "abc")
a >> b >> c
dag.add_task("flaky", flaky)

gate_dag = DAG("gate", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
gate_dag.add_task("gated", gated)
"""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with embedded_harness(tmp_path) as harness:
        (harness.dags / "clear_dag.py").write_text(CLEAR_DAG)
        harness.env["CLEAR_TEST_DIR"] = str(tmp_path)
        yield harness


def ran(h: Harness) -> Counter[tuple[str, str]]:
    """Executions of each (task_id, ds), as the ledger counts them."""
    return Counter((e.task_id, e.ds) for e in h.ledger.entries("ran"))


def tis(h: Harness) -> dict[tuple[str, str], dict[str, Any]]:
    rows = json.loads(h.cli("tasks", "1", "-o", "json", "--limit", "0").stdout)
    return {(t["task_id"], t["logical_date"][:10]): t for t in rows}


def state_of(h: Harness) -> str:
    return str(json.loads(h.cli("status", "1", "-o", "json").stdout)["state"])


def refused(h: Harness, *args: str) -> str:
    before = tis(h)
    done = h.cli("clear", "1", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert tis(h) == before  # nothing written
    return done.stderr


def test_clear_reruns_what_it_selects_and_reopens_the_backfill(h: Harness, tmp_path: Path) -> None:
    h.worker()
    days = ("2024-01-01", "2024-01-02")
    first = h.cli("run", "clr", "-s", days[0], "-e", days[1], "--local-workers", "0")
    assert first.returncode == 1, first.stderr  # flaky fails on both dates
    assert state_of(h) == "failed"
    assert ran(h) == Counter({(t, d): 1 for t in ("a", "b", "c", "flaky") for d in days})

    dry = h.cli("clear", "1", "--task-regex", "fla", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 task instances of backfill 1 to clear:\n  flaky: 2 failed\n" in dry.stdout
    assert "dry run: nothing cleared" in dry.stdout
    assert state_of(h) == "failed"
    assert "matches no task of DAG 'clr'" in refused(h, "--task-regex", "^z", "--yes")
    assert "no task instance of backfill 1 matches" in refused(
        h, "--state", "up_for_retry", "--yes"
    )
    assert "pass --yes" in refused(h, "--state", "failed")  # no terminal to ask on
    assert "no backfill with id 7" in h.cli("clear", "7", "--yes").stderr

    (tmp_path / "fixed").touch()
    done = h.cli("clear", "1", "--state", "failed", "--yes", "-o", "json")
    assert done.returncode == 0, done.stderr
    cleared = json.loads(done.stdout)
    assert (cleared["cleared"], cleared["runs_reopened"], cleared["backfill_reopened"]) == (
        2,
        2,
        True,
    )
    assert state_of(h) == "running"
    flaky = tis(h)[("flaky", days[0])]
    assert (flaky["state"], flaky["try_number"]) == ("none", 1)  # try number kept

    resumed = h.cli("resume", "1", "--local-workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert state_of(h) == "success"
    assert tis(h)[("flaky", days[0])]["try_number"] == 2
    assert ran(h) == Counter(
        {**{(t, d): 1 for t in "abc" for d in days}, **{("flaky", d): 2 for d in days}}
    )

    # a on the second date, with its downstream b and c in that run only.
    down = h.cli(
        "clear", "1", "--task-regex", "^a$", "-s", days[1], "-e", days[1], "--downstream", "--yes"
    )
    assert down.returncode == 0, down.stderr
    assert "3 task instances of backfill 1 to clear:" in down.stdout
    daemon = h.cli("coordinator", "--once")  # a daemon drives a reopened backfill too
    assert daemon.returncode == 0, daemon.stderr
    assert state_of(h) == "success"
    assert ran(h) == Counter(
        {
            **{(t, days[0]): 1 for t in "abc"},
            **{(t, days[1]): 2 for t in "abc"},
            **{("flaky", d): 2 for d in days},
        }
    )
    audit = h.cli("audit", "1")
    assert audit.returncode == 0, audit.stdout


def test_a_cleared_running_try_is_stopped_and_runs_again(h: Harness, tmp_path: Path) -> None:
    h.worker()
    run = h.popen("run", "gate", "-s", "2024-01-01", "-e", "2024-01-01", "--local-workers", "0")
    started = tmp_path / "gated-1.started"
    wait_until(started.exists, timeout=60, what="try 1 to start")

    done = h.cli("clear", "1", "--yes")
    assert done.returncode == 0, done.stderr
    assert "1 of them running: their workers stop them" in done.stdout
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err  # the same drive runs try 2 to success
    assert (tmp_path / "gated-2.started").exists()
    gated = tis(h)[("gated", "2024-01-01")]
    assert (gated["state"], gated["try_number"]) == ("success", 2)
    starts = Counter(e.try_number for e in h.ledger.entries("started"))
    assert starts == Counter({1: 1, 2: 1})  # each try's callable started once
    assert [e.try_number for e in h.ledger.entries("ran")] == [2]  # try 1 never finished
    audit = h.cli("audit", "1")
    assert audit.returncode == 0, audit.stdout
