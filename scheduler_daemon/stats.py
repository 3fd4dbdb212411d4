"""What this daemon did, minute by minute, over the last hour: attempts it recorded (completed,
failed) and how late the tasks it claimed started. Kept in memory, per process, for the
dashboard (``GET /v1/stats``); a restart starts it afresh.

Memory is bounded whatever the rate: one slot per minute of the window (a ring, reused as
minutes go by), and per minute at most ``max_samples`` start lags, kept as a uniform random
sample (reservoir sampling) from which the percentiles are read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_MINUTES = 60
MAX_SAMPLES = 1024


@dataclass(frozen=True, slots=True)
class MinuteActivity:
    """One minute of the window; the lag percentiles are None when no task started in it."""

    start: datetime  # UTC, on the minute
    completed: int
    failed: int
    started: int  # tasks claimed (each lag was offered to the sample)
    lag_p50_s: float | None
    lag_p99_s: float | None


class _Slot:
    __slots__ = ("completed", "failed", "minute", "samples", "seen", "started")

    def __init__(self, minute: int) -> None:
        self.minute = minute  # minutes since the Unix epoch
        self.completed = 0
        self.failed = 0
        self.started = 0
        self.samples: list[float] = []
        self.seen = 0  # lags offered this minute (the sample keeps at most max_samples)


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``ordered`` (sorted, not empty):
    always one of the observed values."""
    rank = max(math.ceil(p / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


class Activity:
    """A per-minute ring over the last ``minutes`` minutes; ``now`` says what time it is (an
    aware datetime: the daemon's clock, a fake one in tests)."""

    def __init__(
        self,
        now: Callable[[], datetime],
        *,
        minutes: int = WINDOW_MINUTES,
        max_samples: int = MAX_SAMPLES,
        rng: random.Random | None = None,
    ) -> None:
        if minutes < 1 or max_samples < 1:
            raise ValueError("minutes and max_samples must be at least 1")
        self._now = now
        self.window_minutes = minutes
        self.max_samples = max_samples
        self._rng = rng or random.Random()
        self._slots: list[_Slot | None] = [None] * minutes

    def _minute(self) -> int:
        return math.floor(self._now().timestamp() / 60)

    def _slot(self) -> _Slot:
        minute = self._minute()
        index = minute % self.window_minutes
        slot = self._slots[index]
        if slot is None or slot.minute != minute:  # an hour-old minute (or none): reuse it
            slot = self._slots[index] = _Slot(minute)
        return slot

    # -- recording --------------------------------------------------------------------------

    def finished(self, completed: int = 0, failed: int = 0) -> None:
        """Attempts recorded now: ``completed`` succeeded, ``failed`` did not (failed, timed
        out, lost)."""
        if completed or failed:
            slot = self._slot()
            slot.completed += completed
            slot.failed += failed

    def started(self, lags_s: Iterable[float | None]) -> None:
        """Tasks claimed now, each with its start lag (claimed_at - run_at, in seconds; None
        when unknown: counted, not sampled)."""
        slot: _Slot | None = None
        for lag in lags_s:
            if slot is None:
                slot = self._slot()
            slot.started += 1
            if lag is None:
                continue
            slot.seen += 1
            if len(slot.samples) < self.max_samples:
                slot.samples.append(lag)
            else:  # reservoir sampling: every lag of the minute is kept with equal chance
                j = self._rng.randrange(slot.seen)
                if j < self.max_samples:
                    slot.samples[j] = lag

    # -- reading ----------------------------------------------------------------------------

    def minutes(self) -> list[MinuteActivity]:
        """Exactly ``window_minutes`` entries, oldest first; the last is the current minute."""
        current = self._minute()
        out: list[MinuteActivity] = []
        for minute in range(current - self.window_minutes + 1, current + 1):
            slot = self._slots[minute % self.window_minutes]
            start = datetime.fromtimestamp(minute * 60, UTC)
            if slot is None or slot.minute != minute:
                out.append(MinuteActivity(start, 0, 0, 0, None, None))
                continue
            p50 = p99 = None
            if slot.samples:
                ordered = sorted(slot.samples)
                p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
            out.append(MinuteActivity(start, slot.completed, slot.failed, slot.started, p50, p99))
        return out

    def samples_held(self) -> int:
        """Lag samples kept in memory over the whole ring (at most minutes * max_samples)."""
        return sum(len(slot.samples) for slot in self._slots if slot is not None)
