"""Queue limits of this daemon: how many tasks of each limited queue a claim may take now.

``[queues.<name>]`` may set a per-daemon ``concurrency`` (compared with the tasks of that queue
in this daemon's pool, counted by ``InFlight``), a ``global_concurrency`` (enforced by the claim
itself, in PostgreSQL) and a token bucket (``rate_per_s`` refilling up to ``burst``). Limits are
read on every plan, so a SIGHUP reload applies at the next claim.

A claimed task leaves the pool when its attempt ends, whether it finished, timed out or lost
its lease, so no limit waits on a task that is no longer running here; and a task rescued after
its daemon died counts towards no limit (its lease has expired).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler_daemon.clock import Clock
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.settings import QueueLimits


@dataclass(frozen=True, slots=True)
class QueueRoom:
    """How many tasks a claim may take from one limited queue (None: as many as it wants),
    and the queue's limit across all daemons, enforced in the database."""

    room: int | None
    global_limit: int | None


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    limited: Mapping[str, QueueRoom] = field(default_factory=dict)  # claimed queue by queue
    blocked: tuple[str, ...] = ()  # at a limit now: not claimed from at all
    wake_in_s: float | None = None  # when a rate-limited queue gets its next token

    @property
    def excluded(self) -> list[str]:
        """Queues the general claim leaves out."""
        return [*self.blocked, *self.limited]


NO_LIMITS = ClaimPlan()


def _has_limits(limits: QueueLimits) -> bool:
    return (
        limits.concurrency is not None
        or limits.global_concurrency is not None
        or limits.rate_per_s is not None
    )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # monotonic time of the last refill


class QueueLimiter:
    def __init__(
        self, limits: Callable[[], Mapping[str, QueueLimits]], inflight: InFlight, clock: Clock
    ) -> None:
        self._limits = limits
        self._inflight = inflight
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def plan(self) -> ClaimPlan:
        configured = self._limits()
        if not configured:
            self._buckets.clear()
            return NO_LIMITS
        now = self._clock.monotonic()
        limited: dict[str, QueueRoom] = {}
        blocked: list[str] = []
        wake_in: float | None = None
        for queue, limits in configured.items():
            if not _has_limits(limits):
                continue
            room: int | None = None
            if limits.concurrency is not None:
                room = max(limits.concurrency - self._inflight.running_in(queue), 0)
            if limits.rate_per_s is not None:
                tokens = self._refill(queue, limits, now)
                whole = math.floor(tokens)
                room = whole if room is None else min(room, whole)
                if whole < 1:
                    until = (1.0 - tokens) / limits.rate_per_s
                    wake_in = until if wake_in is None else min(wake_in, until)
            if room == 0:
                blocked.append(queue)
            else:
                limited[queue] = QueueRoom(room, limits.global_concurrency)
        for queue in list(self._buckets):
            kept = configured.get(queue)
            if kept is None or kept.rate_per_s is None:
                del self._buckets[queue]  # its rate limit was removed by a reload
        return ClaimPlan(limited, tuple(blocked), wake_in)

    def took(self, queue: str, n: int) -> None:
        """``n`` tasks of ``queue`` were claimed: they spend tokens of its bucket."""
        bucket = self._buckets.get(queue)
        if bucket is not None and n > 0:
            bucket.tokens -= n

    def _refill(self, queue: str, limits: QueueLimits, now: float) -> float:
        assert limits.rate_per_s is not None
        size = limits.bucket_size
        bucket = self._buckets.get(queue)
        if bucket is None:
            bucket = self._buckets[queue] = _Bucket(tokens=size, at=now)
        else:
            elapsed = max(now - bucket.at, 0.0)
            bucket.tokens = min(size, bucket.tokens + elapsed * limits.rate_per_s)
            bucket.at = now
        return bucket.tokens
