"""Rate and ETA of a backfill from successive counts: shared by `run`'s progress
display and `watch`.

Invariants:
- the rate is TIs finished per second over a sliding window of samples taken
  when counts are read; it is None until the samples span `_MIN_RATE_SPAN`
  seconds, so one reading alone (e.g. `watch --once`) never shows a made-up rate;
- the ETA is the TIs left at that rate; 0 when nothing is left, None when
  there is no rate to divide by;
- time comes from the `clock` given (monotonic by default), so tests drive it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from backfill.model.states import FINISHED, RUN_FINISHED, TIState

Clock = Callable[[], float]
_RATE_WINDOW = 30.0  # seconds of history the rate is computed over
_MIN_RATE_SPAN = 1.0  # seconds: a shorter history gives a meaningless rate
_TI_ORDER = {state.value: i for i, state in enumerate(TIState)}
_FINISHED = frozenset(s.value for s in FINISHED)
_RUNS_FINISHED = frozenset(s.value for s in RUN_FINISHED)


@dataclass(frozen=True, kw_only=True)
class Tally:
    """One moment of a backfill, as displayed."""

    runs_done: int
    runs_total: int
    task_instances: Mapping[str, int]  # state -> count, lifecycle order, zeros dropped
    rate: float | None  # TIs finished per second
    eta: float | None  # seconds until every TI is finished at `rate`
    waiting: Mapping[str, int] = field(default_factory=dict)  # reason -> TIs held back


@dataclass
class Meter:
    """Turns successive counts into a `Tally`, with a rate over a sliding window."""

    clock: Clock = time.monotonic
    window: float = _RATE_WINDOW
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def tally(
        self,
        runs: Mapping[str, int],
        task_instances: Mapping[str, int],
        waiting: Mapping[str, int] | None = None,
    ) -> Tally:
        now = self.clock()
        finished = sum(n for state, n in task_instances.items() if state in _FINISHED)
        self._samples.append((now, finished))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()  # keep one sample at least `window` old
        start, done_then = self._samples[0]
        rate = None
        if now - start >= _MIN_RATE_SPAN:
            rate = (finished - done_then) / (now - start)
        left = sum(task_instances.values()) - finished
        eta = left / rate if rate else None
        return Tally(
            runs_done=sum(n for state, n in runs.items() if state in _RUNS_FINISHED),
            runs_total=sum(runs.values()),
            task_instances=_ordered(task_instances),
            rate=rate,
            eta=eta if left else 0.0,
            waiting=dict(waiting or {}),
        )


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    kept = [(state, n) for state, n in counts.items() if n]
    return dict(sorted(kept, key=lambda item: _TI_ORDER.get(item[0], len(_TI_ORDER))))


def format_duration(seconds: float) -> str:
    """12s, 3m04s, 2h05m."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
