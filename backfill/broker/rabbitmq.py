"""kombu's py-amqp transport, with RabbitMQ's consumer timeout made a connection loss.

RabbitMQ closes the channel of a consumer that held an unacked message longer
than its `consumer_timeout` (30 min by default), with PRECONDITION_FAILED,
and requeues the message. With acks_late a worker holds its message for the
whole try, so a try longer than that meets it. py-amqp raises the close as a
channel error, which Celery's consumer does not count as a connection loss:
the worker stopped for good ("Unrecoverable error"), after its running try.

Here that one close is raised as `ConnectionForced`, a recoverable connection
error: Celery's consumer reconnects and consumes again, and the running try
goes on (`worker_cancel_long_running_tasks_on_connection_loss` is off). The
requeued message is delivered again and loses the claim race (the try is
claimed and running); the try's outcome goes to the database, fenced on its
claim, whatever became of its message. Every other PRECONDITION_FAILED (a
queue declared with other arguments, say) stays the error it was.

Invariant: `make_celery` uses these transports for every `amqp://`,
`pyamqp://` and `amqps://` broker URL.
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import ConnectionForced, PreconditionFailed
from kombu.transport import pyamqp

# What RabbitMQ says when it closes a channel for its consumer timeout (3.8 to 4.x).
CONSUMER_TIMEOUT_REPLY = "delivery acknowledgement on channel"
SCHEMES = {"amqp": "Transport", "pyamqp": "Transport", "amqps": "SSLTransport"}


class Connection(pyamqp.Connection):
    def drain_events(self, timeout: float | None = None) -> Any:
        try:
            return super().drain_events(timeout=timeout)
        except PreconditionFailed as exc:
            if CONSUMER_TIMEOUT_REPLY not in str(exc):
                raise
            raise ConnectionForced(f"consumer timeout: {exc}") from exc


class Transport(pyamqp.Transport):
    Connection = Connection


class SSLTransport(pyamqp.SSLTransport):
    Connection = Connection


def transport_for(broker_url: str) -> str | None:
    """The transport (`module:Class`) for `broker_url`, or None when it is not RabbitMQ's."""
    scheme = broker_url.partition("://")[0].lower()
    name = SCHEMES.get(scheme)
    return None if name is None else f"{__name__}:{name}"
