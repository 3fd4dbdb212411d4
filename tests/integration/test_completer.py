"""The completer against a real PostgreSQL: batches, and a result the database refuses."""

from __future__ import annotations

import asyncio

from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.engine.completer import Completer
from scheduler_daemon.engine.executor import storable_text
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.store.postgres import PostgresStore


async def test_unstorable_result_does_not_hold_up_the_batch(store: PostgresStore) -> None:
    await store.create_tasks([NewTask(action="noop", payload={}) for _ in range(3)])
    claimed = await store.claim("me", 3, 30.0)
    inflight = InFlight(10, SystemClock())
    for task in claimed:
        inflight.admit([task])
    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(store, results, inflight, "me", SystemClock())
    good, bad, nul = claimed
    results.put_nowait(AttemptResult(good.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED))
    # NaN is no JSON PostgreSQL accepts; a NUL character no text it stores.
    results.put_nowait(
        AttemptResult(
            bad.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED, result={"x": float("nan")}
        )
    )
    results.put_nowait(
        AttemptResult(nul.id, 1, Outcome.FAILED, TaskStatus.FAILED, error="bad\x00byte")
    )
    runner = asyncio.create_task(completer.run())
    try:
        async with asyncio.timeout(10):
            await completer.flush()
    finally:
        runner.cancel()
    assert len(inflight) == 0

    done = await store.get_task(good.id)
    assert done is not None
    assert done.status is TaskStatus.COMPLETED

    refused = await store.get_task(bad.id)
    assert refused is not None
    assert refused.status is TaskStatus.FAILED
    assert refused.last_error is not None
    assert "could not be stored" in refused.last_error
    [attempt] = await store.list_attempts(bad.id)
    assert attempt.outcome is Outcome.FAILED

    # The NUL one was refused too, and recorded with the reason.
    [nul_attempt] = await store.list_attempts(nul.id)
    assert nul_attempt.outcome is Outcome.FAILED
    assert nul_attempt.error is not None


def test_storable_text() -> None:
    assert storable_text(None, 10) is None
    assert storable_text("a\x00b", 10) == "a\\0b"
    assert storable_text("x" * 20, 10) == "x" * 9 + "…"
