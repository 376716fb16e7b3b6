"""`backfill.Client`, the Python API: what the CLI does, with the CLI's validation and JSON.

A client on an embedded home (SQLite, the `filesystem://` broker, local workers
it starts for the drive) runs the example DAG; then every read answers exactly
what the matching `backfill ... -o json` prints on the same home, bad input is
a `UserError` naming the problem with nothing written, and importing `backfill`
for a DAG file does not load the client's libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import invoke

from backfill import Client
from backfill.errors import UserError

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "example_bash_operator"


def cli_json(home: Path, *args: str) -> Any:
    result = invoke(home, *args, "-o", "json", dags=DAGS)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_a_client_runs_a_backfill_and_answers_as_the_cli_does(tmp_path: Path) -> None:
    home = tmp_path / "home"
    seen: list[dict[str, Any]] = []
    with Client(home=home, dags_folder=DAGS) as client:
        plan = client.plan(DAG_ID, "2016-01-01", "2016-01-02", task_regex="^runme")
        assert [r["action"] for r in plan["runs"]] == ["run", "run"]
        assert not (home / "backfill.db").exists(), "a plan writes nothing"

        outcome = client.run(DAG_ID, "2016-01-01", "2016-01-02", on_progress=seen.append)
        backfill_id = outcome["id"]
        assert outcome["state"] == "success"
        assert outcome["task_instances"]["success"] == 12
        assert seen, "on_progress was never called"
        assert seen[-1]["task_instances"]["success"] == 12
        assert {"id", "state", "runs", "task_instances", "waiting"} <= set(seen[0])

        assert client.backfills() == cli_json(home, "list")
        assert client.status(backfill_id) == cli_json(home, "status", str(backfill_id))
        every = cli_json(home, "tasks", str(backfill_id), "--limit", "0")
        assert client.tasks(backfill_id, limit=None) == every
        assert client.tasks(backfill_id, states=["success"], task_regex="^runme_0$") == [
            ti for ti in every if ti["task_id"] == "runme_0"
        ]
        log = client.logs(backfill_id, "runme_0", date="2016-01-02")
        assert log == cli_json(home, "logs", str(backfill_id), "runme_0", "-d", "2016-01-02")
        assert "example_bash_operator__runme_0__20160102" in log["log"]

        later = client.plan(DAG_ID, "2016-01-03", "2016-01-04", continue_on_failures=True)
        assert later == cli_json(
            home, "create", DAG_ID, "-s", "2016-01-03", "-e", "2016-01-04",
            "--continue-on-failures", "--dry-run",
        )  # fmt: skip

        created = client.create(DAG_ID, "2016-01-03", "2016-01-04", conf={"source": "api"})
        assert client.status(created)["conf"] == {"source": "api"}
        assert client.pause(created) == {"id": created, "state": "paused"}
        assert client.status(created)["state"] == "paused"
        with pytest.raises(UserError, match="is already paused"):
            client.pause(created)
        assert client.resume(created) == {"id": created, "state": "running"}
        done = client.cancel(created)
        assert (done["state"], done["withdrawn"]) == ("cancelled", 0)
        assert client.status(created)["state"] == "cancelled"

        cleared = client.clear(backfill_id, task_regex="^runme_0$", dry_run=True)
        assert len(cleared["selected"]) == 2
        assert cleared["cleared"] is None


BAD = [
    (lambda c: c.create("nope", "2016-01-01", "2016-01-02"), "DAG 'nope' not found"),
    (lambda c: c.create(DAG_ID, "2016-01-02", "2016-01-01"), "after"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", bogus=1), "unknown option 'bogus'"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", mark_success="yes"), "is a flag"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", conf=[1]), "JSON object"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", reprocess="all"), "--reprocess"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", task_regex="^zzz"), "zzz"),
    (lambda c: c.create(DAG_ID, "2016-01-01", "2016-01-02", pool="nowhere"), "nowhere"),
    (lambda c: c.status(7), "no backfill with id 7"),
    (lambda c: c.backfills(state="done"), "'done' is not one of"),
    (lambda c: c.pause(7), "no backfill with id 7"),
    (lambda c: c.cancel(7, abort=True), "no backfill with id 7"),
    (lambda c: c.clear(7), "no backfill with id 7"),
]


@pytest.mark.parametrize(("call", "says"), BAD)
def test_a_client_refuses_bad_input_naming_it_and_writes_nothing(
    tmp_path: Path, call: Any, says: str
) -> None:
    home = tmp_path / "home"
    with Client(home=home, dags_folder=DAGS) as client, pytest.raises(UserError) as refused:
        call(client)
    assert says in str(refused.value)
    assert not (home / "backfill.db").exists()


def test_a_dag_file_importing_backfill_does_not_load_the_client() -> None:
    probe = (
        "import sys, backfill; print('sqlalchemy' in sys.modules, 'celery' in sys.modules); "
        "from backfill import Client; print(Client.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False", "Client"]
