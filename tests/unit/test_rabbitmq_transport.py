"""`backfill.broker.rabbitmq`: RabbitMQ's consumer timeout becomes a connection loss, and
nothing else changes (the real thing, on a private node: tests/integration/test_rabbitmq.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import amqp
import pytest
from amqp.exceptions import ConnectionForced, PreconditionFailed

from backfill.broker import rabbitmq
from backfill.broker.app import make_celery
from backfill.config import Settings

TIMED_OUT = (
    "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
    "Timeout value used: 1800000 ms."
)


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/vh", "backfill.broker.rabbitmq:Transport"),
        ("pyamqp://u:p@h//", "backfill.broker.rabbitmq:Transport"),
        ("amqps://u:p@h/vh", "backfill.broker.rabbitmq:SSLTransport"),
        ("amqp://u:p@h1;amqp://u:p@h2", "backfill.broker.rabbitmq:Transport"),
        ("redis://127.0.0.1:6379/0", None),
    ],
)
def test_every_rabbitmq_url_gets_the_transport(tmp_path: Path, url: str, transport: str) -> None:
    env = {"BACKFILL_HOME": str(tmp_path), "BACKFILL_BROKER_URL": url}
    assert make_celery(Settings.from_env(env)).conf.broker_transport == transport


def _connection_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> Any:
    def drain_events(self: Any, timeout: float | None = None) -> None:
        raise error

    monkeypatch.setattr(amqp.Connection, "drain_events", drain_events)
    return rabbitmq.Connection.__new__(rabbitmq.Connection)  # no socket: drain only


def test_a_consumer_timeout_is_a_recoverable_connection_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = _connection_raising(monkeypatch, PreconditionFailed(TIMED_OUT))
    with pytest.raises(ConnectionForced, match="consumer timeout") as raised:
        connection.drain_events(timeout=0)
    assert isinstance(raised.value, rabbitmq.Transport.connection_errors)


def test_any_other_precondition_failure_stays_what_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = PreconditionFailed("PRECONDITION_FAILED - inequivalent arg 'x-queue-type'")
    connection = _connection_raising(monkeypatch, other)
    with pytest.raises(PreconditionFailed):
        connection.drain_events(timeout=0)
