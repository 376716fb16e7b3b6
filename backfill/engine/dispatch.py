"""Publishing Celery messages: ring the doorbell for TI tries the coordinator queued.

Invariants:
- publishing happens only after the transaction that queued the TIs has
  committed, so a worker never receives a message for a try the database
  does not show as queued;
- a batch goes out over ONE producer connection (`app.producer_or_acquire`),
  one message per (TI, try) to the TI's own queue, readable in Flower
  (`argsrepr` = `TaskMessage.describe()`), stamped with its backfill's id
  (`BACKFILL_STAMP`, for `cancel --abort` to revoke); on Redis as one pipeline
  (kombu's `Producer.batch`, messages and their task-sent events alike: one
  round trip, not two per message), elsewhere one publish at a time. A
  pipeline that fails may have delivered part of the batch: the messages
  it lost are re-sent like any lost message;
- a message that is lost (broker down, publisher crash) is harmless: the
  coordinator re-publishes a TI left queued longer than
  `BACKFILL_QUEUED_TIMEOUT`, and duplicate messages lose the claim race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from celery import Celery
from kombu import Connection
from kombu import exceptions as kombu_errors
from kombu.exceptions import OperationalError

from backfill.config import redact
from backfill.engine.errors import DispatchError
from backfill.errors import Unreachable
from backfill.messages import BACKFILL_STAMP, TASK_NAME, TaskMessage
from backfill.signing import sign

BROKER_CONNECT_TIMEOUT = 10  # seconds
# A Redis pipeline that failed: part of the batch may have been delivered (kombu 5.7).
BatchPublishError: type[Exception] = kombu_errors.BatchPublishError  # type: ignore[attr-defined]


class Publisher(Protocol):
    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None: ...


class Dispatcher:
    """Publishes TI-try messages through a Celery app (`backfill.broker.app.make_celery`)."""

    def __init__(self, app: Celery, *, key: str | None = None) -> None:
        self._app = app
        self._key = key  # BACKFILL_MESSAGE_KEY: sign every message (`backfill.signing`)

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        """Send each (message, queue); `DispatchError` if the broker cannot be reached."""
        if not messages:
            return
        try:
            with self._app.producer_or_acquire() as producer, producer.batch():
                for message, queue in messages:
                    self._app.send_task(
                        TASK_NAME,
                        kwargs=sign(message.kwargs(), self._key),
                        queue=queue,
                        producer=producer,
                        argsrepr=message.describe(),
                        stamped_headers=[BACKFILL_STAMP],
                        **_stamp(message),
                    )
        except (OperationalError, BatchPublishError) as exc:
            raise DispatchError(
                f"could not publish {len(messages)} message(s) to the broker: {exc}"
            ) from exc

    def close(self) -> None:
        """Release the app's broker connections."""
        self._app.close()


def check_broker(url: str) -> None:
    """`Unreachable` (exit 3) unless the broker at `url` takes a connection now.

    For a command about to create a backfill it drives: refused before anything
    is written. Once driving, a broker outage is ridden out instead.
    """
    with Connection(url, connect_timeout=BROKER_CONNECT_TIMEOUT) as connection:
        # A refusal is the transport's own error, not kombu's OperationalError: on
        # RabbitMQ a bad login is AccessRefused, a missing vhost NotAllowed.
        refusals: tuple[type[BaseException], ...] = (
            OperationalError,
            *connection.connection_errors,
            *connection.channel_errors,
        )
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        except refusals as exc:
            raise Unreachable(f"cannot reach the broker at {redact(url)}: {exc}") from None


def _stamp(message: TaskMessage) -> dict[str, Any]:
    """The stamp's value, passed to `send_task` as an option of the same name."""
    return {BACKFILL_STAMP: str(message.backfill_id)}


def revoke_backfill(app: Celery, backfill_id: int) -> None:
    """Ask every worker to discard the backfill's messages still to come (by its stamp).
    Best effort, not acknowledged: a worker that misses it finds the tries withdrawn in
    the database anyway, and acks their messages as no-ops."""
    app.control.revoke_by_stamped_headers({BACKFILL_STAMP: str(backfill_id)})
