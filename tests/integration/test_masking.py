"""Credentials in URLs never show (DESIGN 4: passwords are printed as `***`).

A whole life of a backfill with a password in both URLs: PostgreSQL (trust
auth accepts it) and a private Redis server that requires it. Every command an
operator types, the daemon's log, the local workers' logs and the try logs are
collected, and neither password may appear in any of them. The errors of a
database and a broker that cannot be reached name their URL, masked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url
from support.harness import Harness, embedded_harness

from .servers import RedisServer, free_port

DB_SECRET = "db-pw-1f3a77"
BROKER_SECRET = "broker-pw-9c2e51"

DAG = """
import logging
import pendulum
from backfill import DAG, Context

dag = DAG("masked", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))


@dag.task
def fine(ctx: Context) -> None:
    logging.getLogger("masked").warning("running %s", ctx.run_id)


@dag.task
def broken(ctx: Context) -> None:
    raise ValueError("broken on purpose")


fine >> broken
"""


def _with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def _everything(h: Harness) -> list[str]:
    """Every output of every command an operator types about the backfill."""
    run = h.cli("run", "masked", "-s", "2024-01-01", "-e", "2024-01-02", "--local-workers", "1")
    assert run.returncode == 1, run.stderr  # `broken` fails
    commands = [
        ["status", "1"],
        ["status", "1", "-o", "json"],
        ["list"],
        ["tasks", "1", "-o", "json"],
        ["logs", "1", "broken", "-d", "2024-01-01"],
        ["logs", "1", "fine", "-d", "2024-01-02", "-o", "json"],
        ["audit", "1"],
        ["watch", "1", "--once"],
        ["clear", "1", "--state", "failed", "--dry-run"],
        ["db", "clean", "--before", "2999-01-01", "--dry-run"],
        ["dags", "list"],
        ["pools", "list"],
        ["coordinator", "--once"],
    ]
    said = [_said(run)] + [_said(h.cli(*args)) for args in commands]
    said += [p.read_text() for p in (h.home / "logs").glob("*.log")]  # the local workers'
    return said


def test_no_password_shows_in_any_output_log_or_error(
    pg_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis_server._client()  # the test's own private server
    client.config_set("requirepass", BROKER_SECRET)
    client.close()
    broker_url = f"redis://:{BROKER_SECRET}@127.0.0.1:{redis_server.port}/0"
    with embedded_harness(tmp_path) as h:
        (h.dags / "masked_dag.py").write_text(DAG)
        h.env["BACKFILL_DATABASE_URL"] = _with_password(pg_url, DB_SECRET)
        h.env["BACKFILL_BROKER_URL"] = broker_url
        said = _everything(h)
        assert "running backfill__2024-01-01" in "".join(said)  # the try logs were read
        for text in said:
            assert DB_SECRET not in text
            assert BROKER_SECRET not in text

        closed = free_port()
        h.env["BACKFILL_DATABASE_URL"] = f"postgresql://postgres:{DB_SECRET}@127.0.0.1:{closed}/x"
        no_db = h.cli("list")
        assert no_db.returncode == 3, _said(no_db)
        assert f"postgresql://postgres:***@127.0.0.1:{closed}/x" in no_db.stderr
        assert DB_SECRET not in _said(no_db)

        h.env["BACKFILL_DATABASE_URL"] = _with_password(pg_url, DB_SECRET)
        h.env["BACKFILL_BROKER_URL"] = f"redis://:{BROKER_SECRET}@127.0.0.1:{closed}/0"
        no_broker = h.cli("run", "masked", "-s", "2024-01-03", "-e", "2024-01-03")
        assert no_broker.returncode == 3, _said(no_broker)
        assert f"redis://:***@127.0.0.1:{closed}/0" in no_broker.stderr
        assert BROKER_SECRET not in _said(no_broker)
