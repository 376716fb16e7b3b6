"""The Celery app shared by workers and the coordinator (which only publishes).

`make_celery` configures it and registers no task: the coordinator publishes by
task name, and `workers.app.make_app` adds the task a worker runs.

Invariants:
- JSON only: tasks, events and accepted content. A pickle message is refused
  by the worker before anything in it is deserialized (pickle would run
  arbitrary code from whoever can write to the broker).
- No result backend: the metadata DB is the truth and Celery the doorbell.
- `acks_late` + `reject_on_worker_lost` + prefetch 1: a message is acked only
  after its task ran, and a worker that dies mid-task hands the message back.
  The hazard Celery documents (a task may run twice) is removed by the claim:
  a redelivered message loses the claim race and is acked as a no-op.
- The embedded `filesystem://` broker keeps everything under
  `settings.broker_folder`, one folder shared by every local process.
- On RabbitMQ a consumer timeout (a try longer than `consumer_timeout`) is a
  connection loss the worker rides out, not the end of the worker
  (`backfill.broker.rabbitmq`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from backfill.broker import rabbitmq
from backfill.config import Settings
from backfill.model.task_options import DEFAULT_QUEUE

# How often an idle worker looks for new message files on the embedded broker
# (kombu's default is 1 s, which would add up to a second to every task hop).
FILESYSTEM_POLL_INTERVAL = 0.1


def make_celery(settings: Settings) -> Celery:
    """A Celery app on `settings.broker_url`, configured as the invariants say; no task."""
    app = Celery("backfill", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        result_accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        # Flower shows every task (received/started/succeeded) with its argsrepr.
        # Also on filesystem://, whose fanout/topic tables live in files: a
        # `celery events` consumer gets them; with none bound they are dropped.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # A broker outage does not stop a running try: its outcome goes to the
        # database, and a redelivered message loses the claim race. (Explicit,
        # since Celery 5 warns that its default will change.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
        timezone="UTC",
    )
    if settings.embedded_broker:
        app.conf.broker_transport = "backfill.broker.transport:Transport"  # atomic publishing
        app.conf.broker_transport_options = _filesystem_options(settings)
    elif transport := rabbitmq.transport_for(settings.broker_url):
        app.conf.broker_transport = transport  # a consumer timeout is a connection loss
    return app


def _filesystem_options(settings: Settings) -> dict[str, Any]:
    root = settings.broker_folder
    folders = {name: root / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        # Producers and consumers share one folder: "in" and "out" are the same.
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        # kombu hands a message to exactly one consumer by moving its file out of
        # the queue folder. A move within one filesystem is an atomic rename;
        # without store_processed kombu moves it to the system temp folder,
        # often another filesystem, where a move is a copy that two consumers
        # can both win. The processed files are cleared with the broker folder.
        "store_processed": True,
        "processed_folder": str(folders["processed"]),
        # Exchange bindings (task routing, broadcast to workers) live in files.
        "control_folder": str(folders["control"]),
        "polling_interval": FILESYSTEM_POLL_INTERVAL,
    }
