"""kombu's `filesystem://` transport with atomic publishing (the embedded broker).

kombu writes a message file in place, in the queue folder, while consumers
take messages by moving whatever files they see there: a consumer can take a
file that is still being written, read it empty and crash, and the message is
lost until the coordinator re-dispatches it. Here a message is written to a
temporary folder beside the queue folder (same filesystem) and renamed into
place, so a consumer only ever sees complete files.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


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
