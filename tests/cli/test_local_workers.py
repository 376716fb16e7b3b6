"""Local Celery workers (`backfill.client.local_workers`): real `celery worker` processes.

Every test waits on conditions with deadlines, and whatever it started is
stopped or killed in teardown, checked by process id and process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest
from support.processes import alive, group_members
from support.waiting import wait_until

from backfill import DAG, Context
from backfill.client.errors import LocalWorkersError
from backfill.client.local_workers import (
    LocalWorkers,
    clear_stale_broker_files,
    dag_queues,
    settings_env,
)
from backfill.config import Settings

REPO = Path(__file__).parents[2]
REPO_DAGS = REPO / "dags"


def kill_groups(pids: list[int]) -> None:
    for pid in pids:
        for member in group_members(pid):
            os.kill(member, signal.SIGKILL)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"BACKFILL_HOME": str(tmp_path / "home"), "BACKFILL_DAGS_FOLDER": str(REPO_DAGS)}
    )


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of workers a test started: whatever is left of them is killed afterwards."""
    pids: list[int] = []
    yield pids
    kill_groups(pids)


# --- pure helpers ----------------------------------------------------------------------


def test_settings_env_round_trips(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BACKFILL_HOME": str(tmp_path / "h"),
            "BACKFILL_DATABASE_URL": "postgresql://u:secret@db/x",
            "BACKFILL_BROKER_URL": "redis://127.0.0.1:6379/3",
            "BACKFILL_DAGS_FOLDER": str(tmp_path / "d"),
            "BACKFILL_HEARTBEAT_INTERVAL": "0.5",
            "BACKFILL_HEARTBEAT_TIMEOUT": "7",
            "BACKFILL_QUEUED_TIMEOUT": "9",
        }
    )
    assert Settings.from_env(settings_env(settings)) == settings


def test_dag_queues_are_the_distinct_task_queues() -> None:
    dag = DAG("q", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))

    def noop(ctx: Context) -> None: ...

    dag.add_task("a", noop, queue="gpu")
    dag.add_task("b", noop)
    dag.add_task("c", noop, queue="gpu")
    assert dag_queues(dag) == ("default", "gpu")


def test_clear_stale_broker_files_keeps_task_messages(tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    kept = [
        "queue/100_aa.default.msg",  # a doorbell of a queued TI: never deleted
        "queue/101_bb.gpu.msg",
        "control/default.exchange",  # routes task messages to their queue
    ]
    stale = [
        "queue/102_cc.local0-1a2b@vm.celery.pidbox.msg",
        "queue/103_dd.c9f1.reply.celery.pidbox.msg",
        "queue/104_ee.celeryev.5f1e.msg",
        "processed/99_ff.default.msg",
        "control/celery.pidbox.exchange",
        "control/reply.celery.pidbox.exchange",
        "control/celeryev.exchange",
    ]
    for name in kept + stale:
        (broker / name).parent.mkdir(parents=True, exist_ok=True)
        (broker / name).write_text("{}")
    assert clear_stale_broker_files(broker) == len(stale)
    left = sorted(str(p.relative_to(broker)) for p in broker.rglob("*") if p.is_file())
    assert left == sorted(kept)
    assert clear_stale_broker_files(tmp_path / "missing") == 0


# --- real workers ------------------------------------------------------------------------


def test_start_ready_and_stop_leave_nothing_behind(settings: Settings, started: list[int]) -> None:
    stale = settings.broker_folder / "queue" / "1_x.old@vm.celery.pidbox.msg"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    workers = LocalWorkers(settings, 2)
    with workers:
        started.extend(workers.pids)
        assert not stale.exists()
        assert len(workers.pids) == 2
        for pid, log in zip(workers.pids, workers.logs, strict=True):
            assert alive(pid)
            assert log.parent == settings.home / "logs"
            assert " ready." in log.read_text()
            # -c 1: the main process and one pool child, in a group of their own.
            assert len(group_members(pid)) == 2
            assert os.getpgid(pid) == pid
    for pid in workers.pids:
        assert not alive(pid)
        assert group_members(pid) == []
    assert all("Warm shutdown" in log.read_text() for log in workers.logs)
    workers.stop()  # idempotent


def test_a_worker_can_have_more_pool_processes_its_own_logs_and_environment(
    settings: Settings, started: list[int], tmp_path: Path
) -> None:
    logs = tmp_path / "elsewhere"
    workers = LocalWorkers(
        settings, 1, concurrency=2, env={"BACKFILL_TEST_MARK": "x"}, log_folder=logs
    )
    with workers:
        started.extend(workers.pids)
        [pid] = workers.pids
        assert workers.logs == [logs / workers.logs[0].name]
        assert len(workers.pool_pids()) == 2  # -c 2
        assert len(group_members(pid)) == 3
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"BACKFILL_TEST_MARK=x" in environ
    assert workers.pool_pids() == []


def test_a_worker_dying_at_start_is_a_clear_error(settings: Settings, started: list[int]) -> None:
    workers = LocalWorkers(settings, 2, app="no_such_module_for_backfill_tests")
    with pytest.raises(LocalWorkersError) as caught:
        workers.start()
    started.extend(workers.pids)
    message = str(caught.value)
    assert "exited with code" in message
    assert "Unable to load celery application" in message  # the log's tail
    assert all(not alive(pid) and not group_members(pid) for pid in workers.pids)


def test_a_worker_never_ready_times_out_and_is_stopped(tmp_path: Path, started: list[int]) -> None:
    # Nothing listens on port 1: the worker retries its broker connection forever.
    settings = Settings.from_env(
        {
            "BACKFILL_HOME": str(tmp_path / "home"),
            "BACKFILL_DAGS_FOLDER": str(REPO_DAGS),
            "BACKFILL_BROKER_URL": "redis://127.0.0.1:1/0",
        }
    )
    workers = LocalWorkers(settings, 1, ready_timeout=3, stop_timeout=10)
    with pytest.raises(LocalWorkersError, match="was not ready after 3s"):
        workers.start()
    started.extend(workers.pids)
    assert workers.pids
    assert all(not alive(pid) and not group_members(pid) for pid in workers.pids)


PARENT = textwrap.dedent(
    """
    import json, sys, time
    from backfill.config import Settings
    from backfill.client.local_workers import LocalWorkers
    workers = LocalWorkers(Settings.from_env(), 2)
    workers.start()
    print(json.dumps(workers.pids), flush=True)
    time.sleep(600)
    """
)


def test_workers_stop_when_their_parent_is_killed(settings: Settings, started: list[int]) -> None:
    env = {**os.environ, **settings_env(settings)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        started.extend(pids)
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
        parent.kill()
        parent.wait(timeout=30)
        wait_until(
            lambda: not any(group_members(pid) for pid in pids),
            timeout=60,
            what="the orphaned workers shut down",
        )
    finally:
        parent.kill()
        parent.wait(timeout=30)
