"""The completer never drops a result it took: any error is retried, a result that keeps failing
is isolated, and a completer restarted after a crash or a stop writes what the old run held."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest

from scheduler_daemon.domain.models import AttemptResult, Outcome, TaskStatus
from scheduler_daemon.engine.completer import UNEXPECTED_TRIES, Completer
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.signals import CompleterSignals
from scheduler_daemon.engine.supervisor import Supervisor
from tests.fakes import FakeClock, FakeEngineStore, claimed_task

POISON = {"poison": True}


@dataclass
class FlakyStore(FakeEngineStore):
    """Fails ``complete`` with each error of ``errors`` in turn, then works; and always fails
    a batch holding a result equal to POISON (an error that depends on one result)."""

    errors: list[Exception] = field(default_factory=list)
    calls: int = 0
    failing: asyncio.Event = field(default_factory=asyncio.Event)

    async def complete(self, owner: str, results: Sequence[AttemptResult]) -> set[uuid.UUID]:
        self.calls += 1
        if self.errors:
            self.failing.set()
            raise self.errors.pop(0)
        if any(r.result == POISON for r in results):
            raise RuntimeError("cannot encode this result")
        return await super().complete(owner, results)


def _results(n: int, inflight: InFlight) -> list[AttemptResult]:
    out = []
    for _ in range(n):
        task = claimed_task()
        inflight.admit([task])
        out.append(AttemptResult(task.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED))
    return out


async def _drive(clock: FakeClock, done: asyncio.Future[None]) -> None:
    """Advance the fake clock through the completer's back-off sleeps until ``done``."""
    async with asyncio.timeout(5):
        while not done.done():
            await clock.advance(2.0)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress"),
        RuntimeError("unexpected"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=["internal-client-error", "runtime-error", "connection-lost"],
)
async def test_a_batch_that_fails_with_any_error_is_written_on_a_later_try(
    error: Exception,
) -> None:
    clock = FakeClock()
    store = FlakyStore(errors=[error])
    inflight = InFlight(10, clock)
    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(store, results, inflight, "me", clock, signals=CompleterSignals().arm())
    batch = _results(5, inflight)
    for r in batch:
        results.put_nowait(r)
    runner = asyncio.create_task(completer.run())
    try:
        await completer.signals.retrying.next()
        assert clock.sleep_calls == [0.05]
        await clock.advance(0.05)
        assert await completer.signals.recorded.next() == [r.task_id for r in batch]
        assert not runner.done(), "the completer crashed instead of retrying"
    finally:
        runner.cancel()
    assert [r.task_id for r in store.completed] == [r.task_id for r in batch]
    assert len(inflight) == 0
    assert completer.recorded_total == 5


async def test_a_result_that_keeps_failing_holds_up_only_itself() -> None:
    clock = FakeClock()
    store = FlakyStore()
    inflight = InFlight(10, clock)
    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(store, results, inflight, "me", clock)
    good = _results(3, inflight)
    task = claimed_task()
    inflight.admit([task])
    poison = AttemptResult(task.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED, result=POISON)
    for r in [good[0], poison, *good[1:]]:
        results.put_nowait(r)
    runner = asyncio.create_task(completer.run())
    flushed = asyncio.ensure_future(completer.flush())
    try:
        await _drive(clock, flushed)
    finally:
        runner.cancel()
    by_id = {r.task_id: r for r in store.completed}
    assert set(by_id) == {r.task_id for r in good} | {task.id}
    # The poisoned attempt is recorded all the same: failed, saying why, without its result.
    recorded = by_id[task.id]
    assert recorded.outcome is Outcome.FAILED
    assert recorded.next_status is TaskStatus.FAILED
    assert recorded.result is None
    assert recorded.error is not None
    assert "could not be stored" in recorded.error
    assert store.calls >= UNEXPECTED_TRIES


async def test_a_restarted_completer_writes_what_its_predecessor_held() -> None:
    clock = FakeClock()
    # The database stays unreachable while the first run holds the batch.
    store = FlakyStore(errors=[OSError("connection refused")] * 3)
    inflight = InFlight(10, clock)
    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(store, results, inflight, "me", clock, signals=CompleterSignals().arm())
    batch = _results(4, inflight)
    for r in batch:
        results.put_nowait(r)
    async with Supervisor(clock) as supervisor:
        supervisor.start("completer", completer.run)
        assert "connection refused" in await completer.signals.retrying.next()
        assert completer.held == 4
        # Stopped while it holds the batch (a crash or a stop mid-retry), then started again.
        await supervisor.stop("completer")
        assert results.qsize() == 0
        assert store.completed == []
        supervisor.start("completer", completer.run)
        flushed = asyncio.ensure_future(completer.flush())
        await _drive(clock, flushed)
        await supervisor.stop("completer")
    assert [r.task_id for r in store.completed] == [r.task_id for r in batch]
    assert completer.held == 0
