"""The `backfill` command line: output, exit codes, and bad input that writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url
from support import cli
from support.cli import assert_user_error
from support.factories import existing_run
from support.private_rabbit import PrivateVhost

from backfill.cli import main
from backfill.config import redact
from backfill.errors import UserError
from backfill.planning.errors import BadConf
from backfill.planning.run_options import MAX_CONF_BYTES, ReprocessPolicy, RunOptions, parse_conf
from backfill.store import pools
from backfill.store.db import create_engine_for, head_revision
from backfill.store.schema import (
    backfill_transitions,
    backfills,
    dag_runs,
    run_transitions,
    task_instances,
    ti_transitions,
)

REPO_DAGS = Path(__file__).parents[2] / "dags"
TEST_DAGS = Path(__file__).parents[1] / "dags"
BASH_TASKS = [
    "runme_0",
    "runme_1",
    "runme_2",
    "run_after_loop",
    "also_run_this",
    "run_this_last",
]
FAILED_AND_AFTER = ["run_after_loop", "run_this_last"]  # what the seeded failed run reruns
DRY_RUN = ["run", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-02", "--dry-run"]


# Every command of this module reads the repository's DAGs unless told otherwise.
invoke = partial(cli.invoke, dags=REPO_DAGS)


def cells(line: str) -> list[str]:
    """The cells of one line of a rich table."""
    return [c.strip() for c in line.strip("│ ").split("│")]


# --- dags -----------------------------------------------------------------------------


def test_dags_list_table(home: Path) -> None:
    result = invoke(home, "dags", "list")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if "example_bash_operator" in ln)
    for cell in ("@daily", "UTC", " 6 ", "example_bash_operator.py"):
        assert cell in line
    assert "\x1b" not in result.stdout  # not a terminal: no escape codes
    assert result.stderr == ""


def test_dags_list_json(home: Path) -> None:
    result = invoke(home, "dags", "list", "--output", "json", dags=TEST_DAGS)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {"dag_id": "every_minute", "schedule": "* * * * *", "timezone": "UTC", "tasks": 1,
         "file": "paris.py"},
        {"dag_id": "linear", "schedule": "@daily", "timezone": "UTC", "tasks": 3,
         "file": "linear.py"},
        {"dag_id": "paris_hourly", "schedule": "@hourly", "timezone": "Europe/Paris", "tasks": 1,
         "file": "paris.py"},
    ]  # fmt: skip


@pytest.fixture
def broken_dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "good.py").write_text((TEST_DAGS / "linear.py").read_text())
    (folder / "syntax.py").write_text("def broken(:\n")
    (folder / "bad_option.py").write_text(
        textwrap.dedent(
            """
            import pendulum
            from backfill import DAG
            dag = DAG("x", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1))
            @dag.task(retries=-1)
            def t(ctx):
                pass
            """
        )
    )
    return folder


def test_dags_list_warns_about_broken_files_on_stderr(home: Path, broken_dags: Path) -> None:
    result = invoke(home, "dags", "list", "-o", "json", dags=broken_dags)
    assert result.exit_code == 0
    assert [d["dag_id"] for d in json.loads(result.stdout)] == ["linear"]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: bad_option.py failed to import: DagDefinitionError:")
    assert "'retries' must be a non-negative integer" in warnings[0]
    assert warnings[1].startswith("warning: syntax.py failed to import: SyntaxError:")


def test_dags_check_lists_every_broken_file_and_exits_1(home: Path, broken_dags: Path) -> None:
    result = invoke(home, "dags", "check", dags=broken_dags)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bad_option.py: DagDefinitionError: ")
    assert lines[1].startswith("syntax.py: SyntaxError: ")
    assert lines[2] == "2 of 3 DAG files failed to import"
    as_json = json.loads(invoke(home, "dags", "check", "-o", "json", dags=broken_dags).stdout)
    assert (as_json["dags"], as_json["files"]) == (1, 3)
    assert [e["file"] for e in as_json["errors"]] == ["bad_option.py", "syntax.py"]
    assert "Traceback" in as_json["errors"][0]["detail"]


def test_dags_check_ok(home: Path) -> None:
    result = invoke(home, "dags", "check", dags=TEST_DAGS)
    assert result.exit_code == 0
    assert result.stdout == "OK: 3 DAGs in 2 files, no errors\n"


def test_dags_show_example_bash_operator(home: Path) -> None:
    result = invoke(home, "dags", "show", "example_bash_operator")
    assert result.exit_code == 0, result.output
    out = result.stdout
    tasks = out[out.index("Tasks") : out.index("Edges:")]
    rows = [cells(ln) for ln in tasks.splitlines() if ln.startswith("│")]
    assert [(r[1], r[2]) for r in rows] == [
        ("runme_0", "-"),
        ("runme_1", "-"),
        ("runme_2", "-"),
        ("run_after_loop", "runme_0, runme_1, runme_2"),
        ("also_run_this", "-"),
        ("run_this_last", "also_run_this, run_after_loop"),
    ]
    edges = out[out.index("Edges:") :].splitlines()[1:]
    assert [e.strip() for e in edges] == [
        "runme_0 -> run_after_loop",
        "runme_1 -> run_after_loop",
        "runme_2 -> run_after_loop",
        "run_after_loop -> run_this_last",
        "also_run_this -> run_this_last",
    ]
    for fact in ("@daily", "UTC", "max_active_runs", "16"):
        assert fact in out


def test_dags_show_non_default_options(home: Path) -> None:
    out = invoke(home, "dags", "show", "linear", dags=TEST_DAGS).stdout
    tasks = out[out.index("Tasks") : out.index("Edges:")]
    rows = {r[1]: r[3] for r in map(cells, tasks.splitlines()) if len(r) == 4 and r[0].isdigit()}
    assert rows == {
        "extract": "retries=2, pool=db",
        "transform": "-",
        "load": "trigger_rule=all_done",
    }


def test_dags_show_json_is_describe(home: Path) -> None:
    from backfill.model.discovery import load_dags

    result = invoke(home, "dags", "show", "example_bash_operator", "-o", "json")
    assert json.loads(result.stdout) == load_dags(REPO_DAGS).get("example_bash_operator").describe()


PARAMS_DAG = """
import pendulum
from backfill import DAG

dag = DAG(
    "with_params",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    params={"table": "events", "options": {"dry": True}},
)
dag.add_task("t", lambda ctx: None)
"""


def test_dags_show_lists_params_when_the_dag_has_some(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "with_params.py").write_text(PARAMS_DAG)
    out = invoke(home, "dags", "show", "with_params", dags=folder).stdout
    facts = {r[0]: r[1] for r in map(cells, out[: out.index("Tasks")].splitlines()) if len(r) == 2}
    assert facts["params.table"] == '"events"'
    assert facts["params.options"] == '{"dry": true}'
    as_json = invoke(home, "dags", "show", "with_params", "-o", "json", dags=folder).stdout
    assert json.loads(as_json)["params"] == {"table": "events", "options": {"dry": True}}
    # Without params, neither output mentions them.
    bare = invoke(home, "dags", "show", "example_bash_operator").stdout
    assert "params" not in bare
    bare_json = invoke(home, "dags", "show", "example_bash_operator", "-o", "json").stdout
    assert "params" not in json.loads(bare_json)


MAPPED_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("fan", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def numbers(ctx: Context) -> list[int]:
    return [1, 2]


@dag.task
def each(ctx: Context, x: int, y: int, word: str) -> None:
    pass


each.partial(y=1).expand(x=numbers(), word=[f"w{i}" for i in range(7)])
"""


def test_dags_show_tells_what_a_mapped_task_maps_over(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "fan.py").write_text(MAPPED_DAG)
    out = invoke(home, "dags", "show", "fan", dags=folder).stdout
    rows = {r[1]: r for r in map(cells, out[out.index("Tasks") :].splitlines()) if len(r) == 5}
    assert "maps over (expand)" in out
    assert rows["numbers"][4] == "-"
    expand = 'x=result of numbers, word=["w0", "w1", "w2", "w3", "w4", ... (7 elements)]'
    assert rows["each"][4] == expand
    as_json = json.loads(invoke(home, "dags", "show", "fan", "-o", "json", dags=folder).stdout)
    (each,) = [t for t in as_json["tasks"] if t["task_id"] == "each"]
    assert each["expand"] == {"x": {"result_of": "numbers"}, "word": [f"w{i}" for i in range(7)]}
    # A DAG that maps nothing has no such column.
    assert "maps over" not in invoke(home, "dags", "show", "example_bash_operator").stdout


def test_dags_show_unknown_dag(home: Path) -> None:
    result = invoke(home, "dags", "show", "example_bash_operatr")
    assert_user_error(
        result, "DAG 'example_bash_operatr' not found", "Did you mean 'example_bash_operator'?"
    )


def test_missing_dags_folder(home: Path, tmp_path: Path) -> None:
    result = invoke(home, "dags", "list", dags=tmp_path / "nowhere")
    assert_user_error(result, "BACKFILL_DAGS_FOLDER", "does not exist")


# --- run --dry-run --------------------------------------------------------------------


def test_dry_run_acceptance_json(home: Path) -> None:
    result = invoke(home, *DRY_RUN, "--output", "json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dag_id"] == "example_bash_operator"
    assert [(r["logical_date"], r["action"], r["reason"], r["task_ids"]) for r in plan["runs"]] == [
        ("2016-01-01T00:00:00+00:00", "run", "no run exists", BASH_TASKS),
        ("2016-01-02T00:00:00+00:00", "run", "no run exists", BASH_TASKS),
    ]
    assert plan["totals"] == {
        "run": 2, "skip": 0, "reprocess": 0, "runs": 2, "task_instances": 12,
    }  # fmt: skip
    assert plan["options"] == RunOptions().as_json()
    assert plan["task_ids"] == BASH_TASKS
    assert plan["pools"] == {"default_pool": BASH_TASKS}
    assert not home.exists()


def test_dry_run_acceptance_table(home: Path) -> None:
    result = invoke(home, *DRY_RUN)
    assert result.exit_code == 0, result.output
    rows = [ln for ln in result.stdout.splitlines() if "no run exists" in ln]
    assert len(rows) == 2
    assert "2016-01-01 00:00:00+00:00" in rows[0]
    assert "2016-01-02 00:00:00+00:00" in rows[1]
    for row in rows:
        assert "6: " + ", ".join(BASH_TASKS) in row
    assert "2 runs: 2 to run, 0 to reprocess, 0 to skip; 12 task instances to run." in result.stdout
    assert "\x1b" not in result.stdout
    assert not home.exists()


def test_dry_run_shows_local_and_utc_dates_across_dst(home: Path) -> None:
    # Paris springs forward at 02:00 on 2024-03-31: 01:00 CET is followed by 03:00 CEST.
    args = ["run", "paris_hourly", "-s", "2024-03-31T01:00", "-e", "2024-03-31T03:00", "--dry-run"]
    plan = json.loads(invoke(home, *args, "-o", "json", dags=TEST_DAGS).stdout)
    assert [(r["logical_date_local"], r["logical_date"]) for r in plan["runs"]] == [
        ("2024-03-31T01:00:00+01:00", "2024-03-31T00:00:00+00:00"),
        ("2024-03-31T03:00:00+02:00", "2024-03-31T01:00:00+00:00"),
    ]
    table = invoke(home, *args, dags=TEST_DAGS).stdout
    assert "logical date (Europe/Paris)" in table
    rows = [cells(ln)[:3] for ln in table.splitlines() if "no run exists" in ln]
    assert rows == [
        ["2024-03-31 01:00:00+01:00", "2024-03-31 00:00:00+00:00", "run"],
        ["2024-03-31 03:00:00+02:00", "2024-03-31 01:00:00+00:00", "run"],
    ]


def test_dry_run_echoes_the_options(home: Path) -> None:
    args = [*DRY_RUN, "--conf", '{"k": [1, 2]}', "--max-active-runs", "3", "--reprocess", "failed"]
    out = invoke(home, *args).stdout
    assert 'reprocess=failed, max_active_runs=3, conf={"k": [1, 2]}' in out
    assert "flags: none; pool: each task's own" in out
    assert "tasks: all 6" in out
    plan = json.loads(invoke(home, *args, "-o", "json").stdout)
    expected = RunOptions(reprocess=ReprocessPolicy.FAILED, conf={"k": [1, 2]}, max_active_runs=3)
    assert plan["options"] == expected.as_json()


# Each flag of DESIGN section 4 -> the field of RunOptions it sets, and to what.
FLAGS = [
    (["--rerun-failed-tasks"], "rerun_failed_tasks", True),
    (["--mark-success"], "execution", "mark_success"),
    (["--run-backwards"], "order", "backward"),
    (["--ignore-first-depends-on-past"], "depends_on_past", "ignore_first"),
    (["--ignore-dependencies"], "dependencies", "ignore"),
    (["--continue-on-failures"], "on_failure", "continue"),
    (["--disable-retry"], "retries", "disabled"),
    (["--task-regex", "^runme_"], "task_regex", "^runme_"),
    (["--pool", "default_pool"], "pool", "default_pool"),
    (["--reprocess", "completed"], "reprocess", "completed"),
    (["--max-active-runs", "2"], "max_active_runs", 2),
    (["--conf", '{"a": 1}'], "conf", {"a": 1}),
]


@pytest.mark.parametrize(("flag", "field", "value"), FLAGS)
def test_each_flag_sets_its_option(home: Path, flag: list[str], field: str, value: object) -> None:
    result = invoke(home, *DRY_RUN, *flag, "-o", "json")
    assert result.exit_code == 0, result.output
    options = json.loads(result.stdout)["options"]
    assert options == {**RunOptions().as_json(), field: value}
    assert not home.exists()


def test_every_flag_at_once_in_the_dry_run_table(home: Path) -> None:
    args = [flag for flags, _, _ in FLAGS for flag in flags]
    result = invoke(home, *DRY_RUN, *args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert 'reprocess=completed, max_active_runs=2, conf={"a": 1}' in out
    assert (
        "flags: --rerun-failed-tasks, --mark-success, --run-backwards, "
        "--ignore-first-depends-on-past, --ignore-dependencies, --continue-on-failures, "
        "--disable-retry; pool: every TI in pool default_pool"
    ) in out
    assert "tasks: 3 of 6 selected by --task-regex '^runme_': runme_0, runme_1, runme_2" in out
    rows = [cells(ln) for ln in out.splitlines() if "no run exists" in ln]
    # --run-backwards: the newest date starts first.
    assert [r[0] for r in rows] == ["2016-01-02 00:00:00+00:00", "2016-01-01 00:00:00+00:00"]
    assert {r[3] for r in rows} == {"3: runme_0, runme_1, runme_2"}


def test_task_regex_selects_the_tis_of_the_plan(home: Path) -> None:
    result = invoke(home, *DRY_RUN, "--task-regex", "run_", "-o", "json")
    plan = json.loads(result.stdout)
    selected = ["run_after_loop", "also_run_this", "run_this_last"]  # upstreams not required
    assert plan["task_ids"] == selected
    assert [r["task_ids"] for r in plan["runs"]] == [selected, selected]
    assert plan["totals"]["task_instances"] == 6


# --- bad input: exit 2, one line, nothing written -------------------------------------


def run_args(start: str, end: str, *extra: str, dag: str = "example_bash_operator") -> list[str]:
    return ["run", dag, "-s", start, "-e", end, *extra]


BAD_INPUT = [
    (run_args("2016-01-01", "2016-01-02", "--dry-run", dag="nope"), ["DAG 'nope' not found"]),
    (
        run_args("2016-01-03", "2016-01-02", "--dry-run"),
        ["--start-date 2016-01-03T00:00:00+00:00 is after --end-date"],
    ),
    (
        run_args("2016-01-01T01:00", "2016-01-01T23:00", "--dry-run"),
        ["no logical date of DAG 'example_bash_operator'", "widen the range"],
    ),
    (
        run_args("yesterday", "2016-01-02", "--dry-run"),
        ["--start-date", "'yesterday' is not a date"],
    ),
    (
        run_args("2016-01-01", "2016-13-45", "--dry-run"),
        ["--end-date", "'2016-13-45' is not a date"],
    ),
    ([*DRY_RUN, "--conf", '{"a": 1'], ["--conf is not valid JSON", "line 1 column 8"]),
    ([*DRY_RUN, "--conf", "[1, 2]"], ["--conf must be a JSON object", "got an array"]),
    ([*DRY_RUN, "--conf", '{"a": NaN}'], ["--conf is not valid JSON: NaN"]),
    (
        [*DRY_RUN, "--conf", json.dumps({"x": "y" * MAX_CONF_BYTES})],
        ["--conf is 65545 bytes", "at most 65536 bytes (64 KiB)"],
    ),
    ([*DRY_RUN, "--max-active-runs", "0"], ["--max-active-runs must be an integer >= 1, got 0"]),
    ([*DRY_RUN, "--max-active-runs", "x"], ["'--max-active-runs'", "'x' is not a valid integer"]),
    ([*DRY_RUN, "--reprocess", "all"], ["'--reprocess'", "'all' is not one of"]),
    ([*DRY_RUN, "--output", "yaml"], ["'--output'", "'yaml' is not one of"]),
    (
        ["run", "example_bash_operator", "-e", "2016-01-02"],
        ["Missing option '-s' / '--start-date'"],
    ),
    (["dags", "nothing"], ["No such command 'nothing'"]),
    ([*DRY_RUN, "--task-regex", "("], ["--task-regex '(' is not a regular expression"]),
    (
        [*DRY_RUN, "--task-regex", "^run$"],
        [
            "--task-regex '^run$' matches no task of DAG 'example_bash_operator'; its tasks are: "
            + ", ".join(BASH_TASKS)
        ],
    ),
    ([*DRY_RUN, "--pool", "two words"], ["--pool must be a pool name", "'two words'"]),
    ([*DRY_RUN, "--mark-success=yes"], ["Option '--mark-success' does not take a value"]),
    (
        [*DRY_RUN, "--pool", "nope"],
        [
            "pool 'nope' (needed by --pool) does not exist; create it first: "
            "backfill pools set nope SLOTS"
        ],
    ),
    # Without --dry-run: refused before the embedded database is created.
    (
        run_args("2016-01-01", "2016-01-02", "--pool", "nope"),
        ["pool 'nope' (needed by --pool) does not exist"],
    ),
    (
        ["create", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-01", "--pool", "x"],
        ["pool 'x' (needed by --pool) does not exist", "backfill pools set x SLOTS"],
    ),
    (
        run_args("2016-01-01", "2016-01-02", "--task-regex", "nothing"),
        ["--task-regex 'nothing' matches no task"],
    ),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    home: Path, args: list[str], fragments: list[str]
) -> None:
    assert_user_error(invoke(home, *args), *fragments)
    assert not home.exists()


PAST_DAG = """
import pendulum
from backfill import DAG, Context

dag = DAG("past", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


def noop(ctx: Context) -> None: ...


a = dag.add_task("a", noop, depends_on_past=True)
b = dag.add_task("b", noop, depends_on_past=True)
c = dag.add_task("c", noop)
pooled = dag.add_task("pooled", noop, pool="db")
a >> b >> c
"""
PAST = ["past", "-s", "2024-01-01", "-e", "2024-01-03"]


@pytest.fixture
def past_dags(tmp_path: Path) -> Path:
    """A DAG with depends_on_past tasks and a task in pool `db`, which does not exist."""
    folder = tmp_path / "past_dags"
    folder.mkdir()
    (folder / "past.py").write_text(PAST_DAG)
    return folder


@pytest.mark.parametrize("command", ["run", "create"])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_run_backwards_is_refused_with_depends_on_past(
    home: Path, past_dags: Path, command: str, dry_run: list[str]
) -> None:
    result = invoke(home, command, *PAST, "--run-backwards", *dry_run, dags=past_dags)
    assert_user_error(
        result,
        "You cannot backfill backwards because one or more tasks depend_on_past: a, b",
    )
    assert not home.exists()


def test_run_backwards_without_a_selected_depends_on_past_task(home: Path, past_dags: Path) -> None:
    args = [*PAST, "--run-backwards", "--task-regex", "^c$", "--dry-run", "-o", "json"]
    result = invoke(home, "run", *args, dags=past_dags)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [r["logical_date"][:10] for r in plan["runs"]] == [
        "2024-01-03", "2024-01-02", "2024-01-01",
    ]  # fmt: skip
    assert {tuple(r["task_ids"]) for r in plan["runs"]} == {("c",)}
    assert plan["pools"] == {"default_pool": ["c"]}


def test_a_pool_a_selected_task_declares_must_exist_unless_overridden(
    home: Path, past_dags: Path
) -> None:
    refused = invoke(home, "run", *PAST, dags=past_dags)
    assert_user_error(
        refused,
        "pool 'db' (needed by pooled) does not exist; create it first: backfill pools set db SLOTS",
    )
    override = invoke(home, "create", *PAST, "--pool", "nope", "--dry-run", dags=past_dags)
    assert_user_error(
        override,  # only the override is needed: it replaces the declared pool 'db'
        "pool 'nope' (needed by --pool) does not exist; "
        "create it first: backfill pools set nope SLOTS",
    )
    assert not home.exists()
    routed = invoke(home, "run", *PAST, "--pool", "default_pool", "--dry-run", dags=past_dags)
    assert routed.exit_code == 0, routed.output
    assert not home.exists()
    # Not selected, not needed.
    planned = invoke(home, "run", *PAST, "--task-regex", "^[abc]$", "--dry-run", dags=past_dags)
    assert planned.exit_code == 0, planned.output
    assert not home.exists()


def test_bad_database_url_is_a_user_error(home: Path) -> None:
    result = invoke(home, *DRY_RUN, db_url="not a url")
    assert_user_error(result, "BACKFILL_DATABASE_URL is not a database URL")
    assert not home.exists()


def test_too_many_runs_of_a_minutely_dag(home: Path) -> None:
    args = ["run", "every_minute", "-s", "2024-01-01", "-e", "2026-01-31", "--dry-run"]
    result = invoke(home, *args, dags=TEST_DAGS)
    assert_user_error(result, "holds more than 1000000 runs of DAG 'every_minute'")
    assert "split it into smaller backfills" in result.output
    assert not home.exists()


# --- options ---------------------------------------------------------------------------


def test_parse_conf_accepts_an_object_up_to_the_limit() -> None:
    assert parse_conf('{"a": {"b": [1, null, "é"]}}') == {"a": {"b": [1, None, "é"]}}
    exactly = '{"x": "' + "y" * (MAX_CONF_BYTES - 9) + '"}'
    assert len(exactly.encode()) == MAX_CONF_BYTES
    assert parse_conf(exactly)["x"].startswith("y")
    with pytest.raises(BadConf, match="65537 bytes"):
        parse_conf(exactly[:-2] + 'y"}')


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON: Expecting value at line 1 column 1"),
        ('"text"', "got a string"),
        ("3", "got a number"),
        ("null", "got null"),
        ("true", "got a boolean"),
        ("{'a': 1}", "Expecting property name enclosed in double quotes"),
        ('{"a": Infinity}', "Infinity is not a JSON value"),
    ],
)
def test_parse_conf_refuses(text: str, problem: str) -> None:
    with pytest.raises(BadConf, match=problem) as info:
        parse_conf(text)
    assert str(info.value).startswith("--conf ")


def test_run_options_validate_when_built() -> None:
    assert RunOptions().as_json() == {
        "reprocess": "none", "conf": {}, "max_active_runs": None, "rerun_failed_tasks": False,
        "on_failure": "stop", "execution": "run", "order": "forward",
        "depends_on_past": "strict", "dependencies": "enforce", "retries": "as_declared",
        "task_regex": None, "pool": None,
    }  # fmt: skip
    options = RunOptions(reprocess=ReprocessPolicy.FAILED, conf={"a": 1}, max_active_runs=2)
    assert RunOptions.from_json(options.as_json()) == options
    with pytest.raises(UserError, match="--max-active-runs"):
        RunOptions(max_active_runs=True)
    with pytest.raises(BadConf, match="must be a JSON object"):
        RunOptions(conf=[1])  # type: ignore[arg-type]
    with pytest.raises(BadConf, match="plain JSON data"):
        RunOptions(conf={"when": datetime(2024, 1, 1, tzinfo=UTC)})
    with pytest.raises(UserError, match="--reprocess must be one of none, failed, completed"):
        RunOptions.from_json({"reprocess": "all"})
    with pytest.raises(AttributeError):
        options.max_active_runs = 3  # type: ignore[misc]


# --- dry run against an existing database (both backends) ------------------------------


def seed(db_url: str) -> None:
    """Day 1 succeeded, day 2 failed at run_after_loop, day 3 is running, day 4 absent."""
    engine = create_engine_for(db_url)
    day = datetime(2016, 1, 1, tzinfo=UTC)
    failed_at = {"run_after_loop": "failed", "run_this_last": "upstream_failed"}
    runs = [
        (day, "success", dict.fromkeys(BASH_TASKS, "success")),
        (day + timedelta(days=1), "failed", {t: failed_at.get(t, "success") for t in BASH_TASKS}),
        (day + timedelta(days=2), "running", {"runme_0": "running"}),
    ]
    with engine.begin() as conn:
        for when, state, tis in runs:
            run_id = f"manual__{when.date()}"
            existing_run(conn, "example_bash_operator", when, state, run_id=run_id, **tis)
    engine.dispose()


def row_counts(db_url: str) -> tuple[int, ...]:
    """Rows of every table a backfill writes (the journals too)."""
    engine = create_engine_for(db_url)
    with engine.connect() as conn:
        counts = tuple(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (
                backfills,
                dag_runs,
                task_instances,
                ti_transitions,
                run_transitions,
                backfill_transitions,
            )
        )
    engine.dispose()
    return counts


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "none",
            [
                ("skip", "already exists: run is success", []),
                ("skip", "already exists: run is failed", []),
                ("skip", "in flight: run is running", []),
                ("run", "no run exists", BASH_TASKS),
            ],
        ),
        (
            "failed",
            [
                ("skip", "already exists: run is success", []),
                ("reprocess", "run is failed; --reprocess failed", FAILED_AND_AFTER),
                ("skip", "in flight: run is running", []),
                ("run", "no run exists", BASH_TASKS),
            ],
        ),
        (
            "completed",
            [
                ("reprocess", "run is success; --reprocess completed", BASH_TASKS),
                ("reprocess", "run is failed; --reprocess completed", BASH_TASKS),
                ("skip", "in flight: run is running", []),
                ("run", "no run exists", BASH_TASKS),
            ],
        ),
    ],
)  # fmt: skip
def test_dry_run_against_existing_runs(
    home: Path, db_url: str, policy: str, expected: list[tuple[str, str, list[str]]]
) -> None:
    seed(db_url)
    before = row_counts(db_url)
    args = ["run", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-04", "--dry-run"]
    result = invoke(home, *args, "--reprocess", policy, "-o", "json", db_url=db_url)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [(r["action"], r["reason"], r["task_ids"]) for r in plan["runs"]] == expected
    assert [r["run_id"] for r in plan["runs"]] == [
        "manual__2016-01-01", "manual__2016-01-02", "manual__2016-01-03", None,
    ]  # fmt: skip
    assert row_counts(db_url) == before
    assert not home.exists()


def test_dry_run_rerun_failed_tasks_against_existing_runs(home: Path, db_url: str) -> None:
    seed(db_url)
    args = ["run", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-04", "--dry-run"]
    result = invoke(home, *args, "--rerun-failed-tasks", "-o", "json", db_url=db_url)
    assert result.exit_code == 0, result.output
    assert [
        (r["action"], r["reason"], r["task_ids"]) for r in json.loads(result.stdout)["runs"]
    ] == [
        ("skip", "already exists: run is success", []),
        ("reprocess", "--rerun-failed-tasks: 2 failed TIs", FAILED_AND_AFTER),
        ("skip", "in flight: run is running", []),
        ("run", "no run exists", BASH_TASKS),
    ]


def test_an_unknown_pool_writes_nothing_then_pool_override_rows(home: Path, db_url: str) -> None:
    seed(db_url)
    before = row_counts(db_url)
    args = ["create", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-04"]
    refused = invoke(home, *args, "--reprocess", "completed", "--pool", "big", db_url=db_url)
    assert_user_error(refused, "pool 'big' (needed by --pool) does not exist", "pools set big")
    assert row_counts(db_url) == before
    assert not home.exists()

    engine = create_engine_for(db_url)
    try:
        with engine.begin() as conn:
            pools.upsert(conn, "big", 4)
        created = invoke(home, *args, "--reprocess", "completed", "--pool", "big", db_url=db_url)
        assert created.exit_code == 0, created.output
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    dag_runs.c.logical_date, task_instances.c.state, task_instances.c.pool
                ).join(dag_runs, dag_runs.c.id == task_instances.c.dag_run_id)
            ).all()
    finally:
        engine.dispose()
    by_day: dict[int, set[tuple[str, str]]] = {}
    for when, state, pool in rows:
        by_day.setdefault(when.day, set()).add((state, pool))
    assert by_day == {
        1: {("none", "big")},  # reprocessed: every TI reset into the override pool
        2: {("none", "big")},
        3: {("running", "default_pool")},  # in flight: skipped, untouched
        4: {("none", "big")},  # new
    }


def test_dry_run_without_a_schema(home: Path, backend: str, empty_db_url: str) -> None:
    """SQLite: no file yet means no runs, and none is created; PostgreSQL: say to migrate."""
    result = invoke(home, *DRY_RUN, "-o", "json", db_url=empty_db_url)
    if backend == "sqlite":
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["runs"]) == 2
        database = make_url(empty_db_url).database
        assert database is not None
        assert not Path(database).exists()
    else:
        assert_user_error(result, "has no Backfill schema", "run `backfill db migrate`")


# --- db migrate ------------------------------------------------------------------------


def test_db_migrate_embedded_creates_home(home: Path) -> None:
    result = invoke(home, "db", "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"database sqlite:///{home / 'backfill.db'} is at revision {head_revision()} (head)\n"
    )
    assert (home / "backfill.db").exists()
    again = invoke(home, "db", "migrate")
    assert again.exit_code == 0
    assert again.stdout == result.stdout


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_db_migrate_postgres_hides_the_password(home: Path, empty_db_url: str) -> None:
    # The test server trusts local connections, so any password is accepted and never needed.
    url = make_url(empty_db_url).set(password="s3cret").render_as_string(hide_password=False)
    result = invoke(home, "db", "migrate", db_url=url)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert ":***@" in result.stdout
    assert result.stdout.endswith(f"is at revision {head_revision()} (head)\n")
    # Now current: a dry run reads it instead of asking for a migration.
    assert invoke(home, *DRY_RUN, db_url=url).exit_code == 0
    assert not home.exists()


# --- the real console script ------------------------------------------------------------


def run_script(home: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    env |= {"BACKFILL_HOME": str(home), "BACKFILL_DAGS_FOLDER": str(REPO_DAGS)}
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_installed_console_script(home: Path) -> None:
    script = Path(sys.executable).with_name("backfill")
    assert script.exists(), "the package's console script is not installed in this venv"
    shown = run_script(home, str(script), "dags", "show", "example_bash_operator")
    assert shown.returncode == 0, shown.stderr
    assert "run_after_loop -> run_this_last" in shown.stdout
    assert "\x1b" not in shown.stdout
    planned = run_script(home, str(script), *DRY_RUN, "-o", "json")
    assert planned.returncode == 0, planned.stderr
    assert [len(r["task_ids"]) for r in json.loads(planned.stdout)["runs"]] == [6, 6]
    bad = run_script(home, str(script), *DRY_RUN, "--conf", "{")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.startswith("error: --conf is not valid JSON")
    assert bad.stderr.count("\n") == 1
    assert not home.exists()


def test_python_dash_m(home: Path) -> None:
    done = run_script(home, sys.executable, "-m", "backfill.cli", "dags", "list", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert "example_bash_operator" in [d["dag_id"] for d in json.loads(done.stdout)]


def test_help_and_version(home: Path) -> None:
    assert "dags" in invoke(home, "--help").stdout
    result = invoke(home, "--version")
    assert result.exit_code == 0
    assert "0.1.0" in result.stdout


def assert_unreachable(result: Result, *fragments: str) -> None:
    """Exit 3, one line `error: cannot reach ...` naming the masked URL and the cause."""
    assert result.exit_code == 3, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "secret" not in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_database_exits_3_naming_it(home: Path) -> None:
    result = invoke(home, "status", db_url="postgresql://postgres:secret@127.0.0.1:1/backfill")
    assert_unreachable(
        result, "the database at postgresql://postgres:***@127.0.0.1:1/backfill", "refused"
    )


def test_run_with_an_unreachable_broker_exits_3_and_writes_nothing(home: Path) -> None:
    env = {
        "BACKFILL_HOME": str(home),
        "BACKFILL_DAGS_FOLDER": str(REPO_DAGS),
        "BACKFILL_BROKER_URL": "redis://:secret@127.0.0.1:1/0",
    }
    args = ["run", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-02"]
    result = CliRunner().invoke(main, args, env=env)
    assert_unreachable(result, "the broker at redis://:***@127.0.0.1:1/0", "refused")
    assert not (home / "backfill.db").exists()


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("where", "cause"),
    [
        ("guest:secret@{host}/{vhost}", "ACCESS_REFUSED"),
        ("guest:guest@{host}/no-such", "NOT_ALLOWED"),
    ],
    ids=["bad-password", "no-vhost"],
)
def test_run_refused_by_rabbitmq_exits_3_naming_it(
    home: Path, rabbit: PrivateVhost, where: str, cause: str
) -> None:
    host = urlsplit(rabbit.url).netloc.rsplit("@", 1)[1]
    url = "amqp://" + where.format(host=host, vhost=rabbit.name)
    env = {
        "BACKFILL_HOME": str(home),
        "BACKFILL_DAGS_FOLDER": str(REPO_DAGS),
        "BACKFILL_BROKER_URL": url,
    }
    args = ["run", "example_bash_operator", "-s", "2016-01-01", "-e", "2016-01-02"]
    result = CliRunner().invoke(main, args, env=env)
    assert_unreachable(result, f"the broker at {redact(url)}", cause)
    assert not (home / "backfill.db").exists()


def test_a_database_refusing_the_login_exits_3_naming_it(home: Path, pg_url: str) -> None:
    url = make_url(pg_url).set(username="no_such_role", password="secret")
    result = invoke(home, "list", db_url=url.render_as_string(hide_password=False))
    assert_unreachable(result, "the database at postgresql://no_such_role:***@", "no_such_role")


def test_a_database_error_is_one_line_and_exit_1(home: Path, pg_url: str) -> None:
    engine = create_engine_for(pg_url)
    with engine.begin() as conn:  # e.g. a table someone dropped by hand
        conn.execute(sa.text("ALTER TABLE backfills RENAME TO backfills_gone"))
    engine.dispose()
    result = invoke(home, "list", db_url=pg_url)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: the database at postgresql://")
    assert 'refused a statement: relation "backfills" does not exist' in lines[0]
    assert "Traceback" not in result.output


def test_an_abort_is_interrupted_exit_130_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def aborted() -> None:
        raise click.exceptions.Abort()

    assert main._run(aborted) == 130  # type: ignore[attr-defined]
    assert capsys.readouterr().err == "error: interrupted\n"
