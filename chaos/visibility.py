"""`celery -A chaos.visibility worker`: the workers' app (`workers.app.make_app`) with a
Redis visibility timeout of `VISIBILITY_TIMEOUT` seconds, checked every second.

kombu's Redis transport hands an unacked message to another consumer once it has
been out longer than the visibility timeout (1 h by default): with acks_late, a
try that outlives it is delivered again while it runs. Test tooling only: the
product keeps kombu's default.
"""

from __future__ import annotations

from backfill.config import Settings
from chaos.settings import VISIBILITY_TIMEOUT
from workers.app import make_app

app = make_app(Settings.from_env())
app.conf.broker_transport_options = {
    **(app.conf.broker_transport_options or {}),
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,  # seconds between restores of overdue messages
    "unacked_restore_throttle": 1,  # ... every one of them looking (kombu: every 10th)
}
