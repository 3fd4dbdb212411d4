"""In-memory fakes for unit tests: a clock the test drives by hand and an engine store.

Nothing here sleeps in real time or does I/O: ``FakeClock.sleep`` suspends until the test calls
``advance``, and tests wait for a component to reach a state through events (its loop's
signals, sleepers, claim calls) instead of polling or yielding turns of the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_daemon.domain.models import AttemptResult, ClaimedTask
from scheduler_daemon.store.base import Rescued

_NS = 1_000_000_000
# Turns of the event loop that ``FakeClock.advance`` gives the tasks it wakes before time
# moves on. Generous: a woken task may need several (wake, cancel its helpers, claim, ...).
# Tests never yield turns themselves: they await an event (a loop's signals, sleepers, claims).
_ADVANCE_TURNS = 50
# A safety net so a broken test fails fast instead of hanging; never part of an assertion.
_GUARD_S = 5.0


async def _let_woken_run() -> None:
    """Time passed on the fake clock: the tasks it woke run (yields, no real sleep)."""
    for _ in range(_ADVANCE_TURNS):
        await asyncio.sleep(0)


def _to_ns(seconds: float) -> int:
    return round(seconds * _NS)


@dataclass(eq=False)
class _Sleeper:
    deadline_ns: int
    future: asyncio.Future[None]


class FakeClock:
    """A ``Clock`` whose time only moves when the test calls ``advance``.

    Time is kept in whole nanoseconds so that ``advance(2.9)`` followed by ``advance(0.1)``
    lands exactly on a deadline set 3 s ahead, free of float rounding.
    """

    def __init__(
        self,
        start: float = 1000.0,
        wall: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    ) -> None:
        self._start_ns = _to_ns(start)
        self._now_ns = self._start_ns
        self._wall = wall
        self._sleepers: list[_Sleeper] = []
        self._changed = asyncio.Event()
        self.sleep_calls: list[float] = []

    # --- the Clock protocol -------------------------------------------------------------

    def monotonic(self) -> float:
        return self._now_ns / _NS

    def now(self) -> datetime:
        elapsed_ns = self._now_ns - self._start_ns
        return self._wall + timedelta(microseconds=elapsed_ns // 1000)

    async def sleep(self, seconds: float) -> None:
        self.sleep_calls.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        # A positive sleep always lasts at least 1 ns of fake time.
        deadline = self._now_ns + max(_to_ns(seconds), 1)
        sleeper = _Sleeper(deadline, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        self._changed.set()
        try:
            await sleeper.future
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
                self._changed.set()

    # --- driving it from a test ---------------------------------------------------------

    @property
    def sleepers(self) -> int:
        """How many coroutines are sleeping on this clock now."""
        return len(self._sleepers)

    @property
    def deadlines(self) -> list[float]:
        """Seconds from now until each sleeper wakes, soonest first."""
        return sorted((s.deadline_ns - self._now_ns) / _NS for s in self._sleepers)

    async def wait_for_sleepers(self, n: int) -> None:
        """Resolve once at least ``n`` coroutines sleep on this clock."""
        async with asyncio.timeout(_GUARD_S):
            while len(self._sleepers) < n:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_no_sleepers(self) -> None:
        """Resolve once nothing sleeps on this clock (the last sleeper woke or was cancelled)."""
        async with asyncio.timeout(_GUARD_S):
            while self._sleepers:
                self._changed.clear()
                await self._changed.wait()

    def jump(self, seconds: float) -> None:
        """Move time forward without waking anyone: a blocked or starved event loop."""
        self._now_ns += _to_ns(seconds)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order.

        Time steps to each deadline in turn and the woken tasks run before the next one, so a
        loop that sleeps 1 s at a time runs three times in ``advance(3)``.
        """
        if seconds < 0:
            raise ValueError("time does not go backwards")
        await _let_woken_run()  # let tasks that are about to sleep register first
        target = self._now_ns + _to_ns(seconds)
        while True:
            due = [s for s in self._sleepers if s.deadline_ns <= target]
            if not due:
                break
            self._now_ns = max(self._now_ns, min(s.deadline_ns for s in due))
            for sleeper in due:
                if sleeper.deadline_ns <= self._now_ns:
                    self._sleepers.remove(sleeper)
                    if not sleeper.future.done():
                        sleeper.future.set_result(None)
            self._changed.set()
            await _let_woken_run()
        self._now_ns = target
        await _let_woken_run()


@dataclass(frozen=True, slots=True)
class ClaimCall:
    owner: str
    limit: int
    lease_s: float
    exclude: tuple[str, ...] = ()
    queue: str | None = None  # claim_queue: the one queue claimed from
    global_limit: int | None = None


@dataclass(frozen=True, slots=True)
class RenewCall:
    owner: str
    held: tuple[tuple[uuid.UUID, int], ...]
    lease_s: float


_counter = itertools.count(1)


def claimed_task(
    *,
    action: str = "noop",
    payload: dict[str, Any] | None = None,
    attempt: int = 1,
    max_attempts: int = 3,
    timeout_s: float = 30.0,
    task_id: uuid.UUID | None = None,
    queue: str = "default",
    retry_base_s: float | None = None,
    retry_cap_s: float | None = None,
) -> ClaimedTask:
    """A ClaimedTask with sensible defaults; every call gets a new id unless one is given."""
    return ClaimedTask(
        id=task_id or uuid.uuid4(),
        action=action,
        payload=payload if payload is not None else {"n": next(_counter)},
        attempt=attempt,
        max_attempts=max_attempts,
        timeout_s=timeout_s,
        run_at=datetime(2025, 1, 1, tzinfo=UTC),
        queue=queue,
        retry_base_s=retry_base_s,
        retry_cap_s=retry_cap_s,
    )


@dataclass
class FakeEngineStore:
    """An in-memory ``EngineStore``: enough for discovery and heartbeat tests.

    ``due`` holds the claimable tasks, handed out oldest first (never those of ``paused``
    queues); ``next_due`` is what ``next_due_in`` answers; ``keep`` decides which leases
    ``renew_leases`` keeps (None: all) and ``during_renew`` / ``during_claim`` run while that
    call is "in flight".
    """

    due: list[ClaimedTask] = field(default_factory=list)
    next_due: float | None = None
    paused: set[str] = field(default_factory=set)
    next_due_excluded: list[tuple[str, ...]] = field(default_factory=list)
    keep: Callable[[uuid.UUID, int], bool] | None = None
    during_renew: Callable[[], None] | None = None
    during_claim: Callable[[], None] | None = None
    claim_calls: list[ClaimCall] = field(default_factory=list)
    next_due_calls: int = 0
    renew_calls: list[RenewCall] = field(default_factory=list)
    completed: list[AttemptResult] = field(default_factory=list)
    released: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    _claimed_event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def add_due(self, tasks: Iterable[ClaimedTask]) -> None:
        self.due.extend(tasks)

    async def wait_for_claims(self, n: int) -> None:
        """Resolve once ``claim`` has been called at least ``n`` times."""
        async with asyncio.timeout(_GUARD_S):
            while len(self.claim_calls) < n:
                self._claimed_event.clear()
                await self._claimed_event.wait()

    # --- the EngineStore protocol -------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]:
        self.claim_calls.append(ClaimCall(owner, limit, lease_s, tuple(exclude)))
        left_out = {*exclude, *self.paused}
        return self._hand_out(limit, lambda t: t.queue not in left_out)

    async def claim_queue(
        self, owner: str, queue: str, limit: int, lease_s: float, global_limit: int | None
    ) -> list[ClaimedTask]:
        self.claim_calls.append(ClaimCall(owner, limit, lease_s, (), queue, global_limit))
        if queue in self.paused:
            return self._hand_out(0, lambda t: False)
        return self._hand_out(limit, lambda t: t.queue == queue)

    def _hand_out(self, limit: int, wanted: Callable[[ClaimedTask], bool]) -> list[ClaimedTask]:
        self._claimed_event.set()
        if self.during_claim is not None:
            self.during_claim()
        taken = [t for t in self.due if wanted(t)][:limit]
        ids = {t.id for t in taken}
        self.due = [t for t in self.due if t.id not in ids]
        return taken

    async def next_due_in(self, exclude: Sequence[str] = ()) -> float | None:
        self.next_due_calls += 1
        self.next_due_excluded.append(tuple(exclude))
        return self.next_due

    async def paused_queues(self) -> frozenset[str]:
        return frozenset(self.paused)

    async def complete(self, owner: str, results: Sequence[AttemptResult]) -> set[uuid.UUID]:
        self.completed.extend(results)
        return {r.task_id for r in results}

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]:
        self.renew_calls.append(RenewCall(owner, tuple(held), lease_s))
        if self.during_renew is not None:
            self.during_renew()
        return {
            (task_id, attempt)
            for task_id, attempt in held
            if self.keep is None or self.keep(task_id, attempt)
        }

    async def release(self, owner: str, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        self.released.extend(held)
        return {task_id for task_id, _ in held}

    async def rescue_expired(self, limit: int) -> list[Rescued]:
        return []
