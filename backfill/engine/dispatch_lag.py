"""The dispatch lag (queued to claimed) of a driven backfill's tries, read from the journal.

Every claim journals a `queued -> running` row (the TI trigger of
`backfill.store.schema`); the lag of a try is that row's time minus its TI's
latest `-> queued` row before it. About once a second (`LOOK_EVERY`) the
coordinator driving a backfill reads the claims journaled since its last look
(`metrics_reads.claims_between`): one range scan of the journal's primary key,
whose cost follows what was journaled since, whatever the backfill's size. The
first look only marks where the journal is: claims before this coordinator
drove the backfill are not observed (nor, after a take-over, observed twice).

Invariants:
- each look reads ids in (floor, top], `top` being the journal's largest id now
  and `floor` the `top` of the look before the last: consecutive looks overlap
  by one look, so a claim whose id was taken before a later one's but whose
  commit landed after the look (ids are not handed out in commit order on
  PostgreSQL) is still read next time; the ids already observed in the overlap
  (`_seen`) are skipped, so no claim is observed twice;
- a look reads at most `LOOK_LIMIT` claims; a full batch moves the floor to its
  last id and the next look reads on from there (a backlog drains a batch a look);
- a lag below zero (the worker's clock behind the coordinator's) counts as zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backfill.engine.metrics import Metrics
from backfill.store import metrics_reads, reads

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

LOOK_EVERY = 1.0  # seconds between looks at one backfill's claims
LOOK_LIMIT = 5000  # claims read per look at most


@dataclass(frozen=True)
class Look:
    """What one look read: the journal's top id, the claims' ids and the new lags."""

    top: int
    ids: tuple[int, ...]
    lags: tuple[float, ...]


class DispatchLag:
    """Where one backfill's claims were last read up to (see the module doc)."""

    def __init__(self, backfill_id: int) -> None:
        self.backfill_id = backfill_id
        self._floor: int | None = None  # None: never looked
        self._mark = 0  # the previous look's top: the next look's floor
        self._seen: set[int] = set()  # journal ids observed above the floor

    def read(self, conn: Connection) -> Look:
        """The claims journaled since the last look; changes nothing until `advance`,
        so a read retried after a dropped connection reads the same again."""
        top = metrics_reads.last_transition_id(conn)
        if self._floor is None:
            return Look(top=top, ids=(), lags=())
        claims = metrics_reads.claims_between(
            conn, self.backfill_id, after=self._floor, upto=top, limit=LOOK_LIMIT
        )
        lags = (
            max(0.0, (c.claimed_at - c.queued_at).total_seconds())
            for c in claims
            if c.journal_id not in self._seen and c.queued_at is not None
        )
        return Look(top=top, ids=tuple(c.journal_id for c in claims), lags=tuple(lags))

    def advance(self, look: Look) -> None:
        """Past what `look` read: the next look starts from here."""
        if self._floor is None:  # the first look only marks where the journal is
            self._floor = self._mark = look.top
        elif len(look.ids) == LOOK_LIMIT:  # a backlog: read on after the last, no overlap
            self._floor = self._mark = look.ids[-1]
            self._seen = set()
        else:
            floor = self._floor = self._mark
            self._mark = look.top
            self._seen = {i for i in (*self._seen, *look.ids) if i > floor}


class LagWatch:
    """Feeds one coordinator's claims into `metrics`: a look per backfill at most every
    `LOOK_EVERY` seconds; nothing at all when `metrics` does not observe the lag."""

    def __init__(self, engine: Engine, metrics: Metrics, dag_id: str) -> None:
        self._engine = engine
        self._metrics = metrics
        self._dag_id = dag_id
        self._lags: dict[int, DispatchLag] = {}
        self._looked: dict[int, float] = {}  # backfill id -> monotonic time of its last look

    def look(
        self,
        backfill_id: int,
        retrying: Callable[[Callable[[], Look]], Look],
        *,
        final: bool = False,
    ) -> None:
        """Observe the backfill's new claims if a look is due (`final`: now, whatever);
        `retrying` runs the read again after a dropped connection."""
        if not self._metrics.observes_lag:
            return
        now = time.monotonic()
        if not final and now - self._looked.get(backfill_id, float("-inf")) < LOOK_EVERY:
            return
        self._looked[backfill_id] = now
        lag = self._lags.setdefault(backfill_id, DispatchLag(backfill_id))

        def read() -> Look:
            with reads.reading(self._engine) as conn:
                return lag.read(conn)

        look = retrying(read)
        lag.advance(look)
        self._metrics.claimed(look.lags, dag_id=self._dag_id)
