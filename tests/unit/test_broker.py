"""The embedded broker's transport (`backfill.broker.transport`) on a real folder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import kombu
import pytest
from celery.worker import state as worker_state
from kombu.connection import Connection

from backfill.broker.app import make_celery
from backfill.config import Settings


def _drain(conn: Connection, timeout: float | None) -> str:
    try:
        conn.drain_events(timeout=timeout)
    except TimeoutError:
        return "timeout"
    return "message"


def test_a_wait_for_messages_ends_once_the_worker_is_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_celery(Settings.from_env({"BACKFILL_HOME": str(tmp_path)}))
    queue = kombu.Queue("q", routing_key="q")
    received: list[Any] = []
    with (
        app.connection_for_write() as conn,
        conn.Consumer(
            queue, callbacks=[lambda body, message: (received.append(body), message.ack())]
        ),
    ):
        # Not stopping: a message is delivered, and an empty wait lasts its timeout.
        with conn.Producer() as producer:
            producer.publish({"n": 1}, routing_key="q", declare=[queue])
        assert _drain(conn, 10) == "message"
        assert received == [{"n": 1}]
        assert _drain(conn, 0.3) == "timeout"

        # A warm shutdown pending (what Celery's SIGTERM handler sets): even a wait with
        # no timeout ends, so the worker's loop gets to look at it.
        monkeypatch.setattr(worker_state, "should_stop", 0)
        ended: list[str] = []
        waiter = threading.Thread(target=lambda: ended.append(_drain(conn, None)), daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert ended == ["timeout"]
