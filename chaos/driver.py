"""`python -m chaos.driver BACKFILL_ID DAG_ID [--kill before|after --armed FILE] [--racing NAME]`:
a coordinator process of the fault matrix, `Coordinator.drive` on the environment's
settings (`BACKFILL_*`), as `backfill coordinator` drives one backfill, with a fault:

- `--kill before|after --armed FILE`: at its first publish of a non-empty batch
  once FILE exists (the row creates it mid-run), the process SIGKILLs itself
  before, or right after, handing the batch to the broker
  (the pass that queued the batch has committed either way). It first prints
  the batch's TI ids as one JSON line, for the row to follow them;
- `--racing NAME`: not exclusive (`Coordinator(exclusive=False)`): it plans and
  dispatches lease or not, so two of them race every pass under the row lock.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from backfill.config import Settings
from backfill.engine.coordinator import Coordinator
from backfill.engine.dispatch import Dispatcher, Publisher
from backfill.messages import TaskMessage
from backfill.model.discovery import load_dags
from backfill.store.db import create_engine_for
from workers.app import make_app

BATCH_LINE = "batch "  # the prefix of the line naming the TIs of the fatal batch


class KillingPublisher:
    """Publishes through `inner`; SIGKILLs this process at its first non-empty batch once
    `armed` exists, `before` publishing it or after."""

    def __init__(self, inner: Publisher, *, armed: Path, before: bool) -> None:
        self.inner, self.armed, self.before = inner, armed, before

    def publish(self, messages: Sequence[tuple[TaskMessage, str]]) -> None:
        fatal = bool(messages) and self.armed.exists()
        if fatal:
            ids = [message.ti_id for message, _ in messages]
            print(BATCH_LINE + json.dumps(ids), flush=True)
        if fatal and self.before:
            os.kill(os.getpid(), signal.SIGKILL)
        self.inner.publish(messages)
        if fatal:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.driver")
    parser.add_argument("backfill_id", type=int)
    parser.add_argument("dag_id")
    parser.add_argument("--kill", choices=["before", "after"])
    parser.add_argument("--armed", type=Path, help="kill once this file exists")
    parser.add_argument("--racing", metavar="NAME")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    dag = load_dags(settings.dags_folder).get(args.dag_id)
    publisher: Publisher = Dispatcher(make_app(settings), key=settings.message_key)
    if args.kill:
        before = args.kill == "before"
        publisher = KillingPublisher(publisher, armed=args.armed, before=before)
    engine = create_engine_for(settings.database_url)
    owner = None if args.racing is None else f"chaos-{args.racing}:{os.getpid()}"
    coordinator = Coordinator(
        engine, settings, dag, owner=owner, publisher=publisher, exclusive=args.racing is None
    )
    try:
        outcome = coordinator.drive(args.backfill_id)
    finally:
        coordinator.close()
        engine.dispose()
    print(f"backfill {args.backfill_id}: {outcome.state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
