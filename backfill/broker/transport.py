"""kombu's `filesystem://` transport with atomic publishing (the embedded broker).

kombu writes a message file in place, in the queue folder, while consumers
take messages by moving whatever files they see there: a consumer can take a
file that is still being written, read it empty and crash, and the message is
lost until the coordinator re-dispatches it. Here a message is written to a
temporary folder beside the queue folder (same filesystem) and renamed into
place, so a consumer only ever sees complete files.

Celery's worker loop for a transport without an event loop (this one) waits
in `drain_events` for up to 2 s before it looks at a pending warm shutdown.
Here that wait is cut in slices of `STOP_CHECK` seconds and ends early once
the worker is stopping, so a local worker told to stop (`backfill run`
ending) stops 2 s sooner. No message is taken or lost by it: only an empty
wait ends early.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from celery.worker import state as worker_state
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

STOP_CHECK = 0.1  # seconds: how often a wait for messages looks for a pending shutdown


class Channel(filesystem.Channel):
    # The stubs of kombu disagree with themselves about this signature.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        staging = folder.parent / "staging"
        try:
            staging.mkdir(exist_ok=True)
            tmp = staging / name
            tmp.write_bytes(dumps(payload).encode())
            os.replace(tmp, folder / name)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to {folder}") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    # The stubs say (connection, **kwargs); kombu's virtual transport takes `timeout`.
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """kombu's wait for one message, in slices that end it once the worker is stopping."""
        started = monotonic()
        while True:
            left = None if timeout is None else timeout - (monotonic() - started)
            wait = STOP_CHECK if left is None else max(0.0, min(STOP_CHECK, left))
            try:
                return super().drain_events(connection, timeout=wait)
            except TimeoutError:
                if stopping() or (left is not None and left <= STOP_CHECK):
                    raise


def stopping() -> bool:
    """Whether this process is a Celery worker with a shutdown pending (the flags its
    SIGTERM / SIGQUIT handlers set, which its loop reads after each wait)."""
    pending = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in pending)
