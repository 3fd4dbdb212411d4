"""``GET /v1/stats`` on loopback against a real PostgreSQL: the counts (every status, per
queue, due now, failed in the last hour), readiness, and the minutes this daemon kept, fed by
the real discovery, completer and rescuer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from scheduler_daemon.api.app import create_app
from scheduler_daemon.api.context import ApiContext
from scheduler_daemon.app import default_actions
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import AttemptResult, ClaimedTask, NewTask, Outcome, TaskStatus
from scheduler_daemon.engine.completer import Completer
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.leases import Rescuer
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore, create_pool

STATUSES = ["waiting", "scheduled", "running", "completed", "failed", "cancelled"]
READ_TOKEN = "stats-test-read-token-0001"
# The minutes are read on this fixed clock: what "the current minute" is never depends on when
# the test runs.
NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


class Readiness:
    def __init__(self, problems: Sequence[str] = ()) -> None:
        self._problems = list(problems)

    async def problems(self) -> list[str]:
        return list(self._problems)


@asynccontextmanager
async def serve(
    store: PostgresStore,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[aiohttp.ClientSession]:
    current = settings or Settings()
    ctx = ApiContext(store, default_actions(), readiness or Readiness(), lambda: current)
    runner = web.AppRunner(create_app(ctx, metrics or Metrics(version="t", now=lambda: NOW)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def _stats(session: aiohttp.ClientSession, **kw: Any) -> dict[str, Any]:
    async with session.get("/v1/stats", **kw) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert isinstance(body, dict)
        return body


async def _insert(
    pool: asyncpg.Pool,
    status: str,
    queue: str,
    n: int = 1,
    *,
    run_at: str = "now() + interval '1 hour'",
    finished_at: str | None = None,
) -> None:
    """``n`` tasks in ``status``, as the engine would leave them."""
    finished = finished_at or (
        "now()" if status in ("completed", "failed", "cancelled") else "NULL"
    )
    await pool.execute(
        f"""
        INSERT INTO tasks (id, action, queue, status, run_at, lease_owner, lease_expires_at,
                           finished_at)
        SELECT gen_random_uuid(), 'noop', $1, $2, {run_at},
               CASE WHEN $2 = 'running' THEN 'elsewhere' END,
               CASE WHEN $2 = 'running' THEN now() + interval '1 minute' END,
               {finished}
        FROM generate_series(1, $3)
        """,
        queue,
        status,
        n,
    )


async def test_counts_per_status_and_queue_on_the_database_clock(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    await _insert(pool, "scheduled", "default", 3, run_at="now() - interval '1 second'")
    await _insert(pool, "scheduled", "default", 2)  # not due yet
    await _insert(pool, "scheduled", "mail", 1, run_at="now() - interval '1 day'")
    await _insert(pool, "running", "default", 1)
    await _insert(pool, "running", "mail", 2)
    await _insert(pool, "waiting", "mail", 1)
    await _insert(pool, "completed", "default", 9)
    await _insert(pool, "failed", "default", 2, finished_at="now() - interval '10 minutes'")
    await _insert(pool, "failed", "mail", 1, finished_at="now() - interval '59 minutes'")
    await _insert(pool, "failed", "mail", 4, finished_at="now() - interval '61 minutes'")
    before = await pool.fetchval("SELECT now()")
    async with serve(store) as api:
        stats = await _stats(api)
    after = await pool.fetchval("SELECT now()")

    counts = stats["counts"]
    assert counts["by_status"] == {
        "waiting": 1,
        "scheduled": 6,
        "running": 3,
        "completed": 9,
        "failed": 7,
        "cancelled": 0,
    }
    assert counts["by_queue"] == {
        "default": {
            "waiting": 0,
            "scheduled": 5,
            "running": 1,
            "completed": 9,
            "failed": 2,
            "cancelled": 0,
        },
        "mail": {
            "waiting": 1,
            "scheduled": 1,
            "running": 2,
            "completed": 0,
            "failed": 5,
            "cancelled": 0,
        },
    }
    assert counts["due_now"] == 4
    assert counts["running"] == 3
    assert counts["failed_last_hour"] == 3  # not the four that failed 61 minutes ago
    generated_at = datetime.fromisoformat(stats["generated_at"])
    assert generated_at.utcoffset() == timedelta(0)
    assert before <= generated_at <= after  # the database's now(), not the process clock
    assert stats["window_s"] == 3600
    assert stats["ready"] is True
    assert stats["problems"] == []


async def test_an_empty_database_has_every_status_at_zero(store: PostgresStore) -> None:
    async with serve(store) as api:
        stats = await _stats(api)
    counts = stats["counts"]
    assert counts["by_status"] == dict.fromkeys(STATUSES, 0)
    assert counts["by_queue"] == {}
    assert (counts["due_now"], counts["running"], counts["failed_last_hour"]) == (0, 0, 0)
    minutes = stats["minutes"]
    assert len(minutes) == 60
    assert all(m["completed"] == m["failed"] == m["started"] == 0 for m in minutes)
    assert all(m["lag_p50_s"] is None and m["lag_p99_s"] is None for m in minutes)


async def test_readiness_problems_are_reported(store: PostgresStore) -> None:
    problems = ["draining: shutting down", "database LISTEN connection is down"]
    async with serve(store, readiness=Readiness(problems)) as api:
        stats = await _stats(api)
    assert stats["ready"] is False
    assert stats["problems"] == problems


async def test_minutes_are_what_the_engine_recorded(store: PostgresStore) -> None:
    """The real discovery claims (lags), the real completer writes outcomes, the real
    rescuer records a lost attempt; the stats show them in the current minute."""
    metrics = Metrics(version="t", now=lambda: NOW)
    now = datetime.now(UTC)
    created = await store.create_tasks(
        [
            NewTask(action="noop", payload={}, run_at=now - timedelta(seconds=30)),
            NewTask(action="noop", payload={}, run_at=now - timedelta(seconds=90)),
            NewTask(action="noop", payload={}, run_at=now - timedelta(seconds=60)),
        ]
    )
    ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
    inflight = InFlight(10, SystemClock())
    discovery = Discovery(
        store,
        inflight,
        ready,
        "me",
        SystemClock(),
        batch_size=lambda: 10,
        poll_interval_s=lambda: 3600.0,
        lease_s=lambda: 30.0,
        metrics=metrics,
    )
    await discovery.claim_once()
    claimed = [ready.get_nowait() for _ in range(ready.qsize())]
    assert len(claimed) == 3
    by_id = {c.id: c for c in claimed}
    first, second, third = (by_id[t.id] for t, _ in created)

    results: asyncio.Queue[AttemptResult] = asyncio.Queue()
    completer = Completer(store, results, inflight, "me", SystemClock(), metrics)
    results.put_nowait(AttemptResult(first.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED))
    results.put_nowait(
        AttemptResult(second.id, 1, Outcome.FAILED, TaskStatus.SCHEDULED, retry_in_s=3600.0)
    )
    runner = asyncio.create_task(completer.run())
    try:
        async with asyncio.timeout(10):
            await completer.flush()
    finally:
        runner.cancel()
    # The third one's daemon "died": its lease expires and the rescuer records it lost.
    await store.pool.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        third.id,
    )
    rescuer = Rescuer(store, SystemClock(), interval_s=lambda: 60.0, metrics=metrics)
    assert await rescuer.sweep() == 1

    async with serve(store, metrics) as api:
        stats = await _stats(api)
    minutes = stats["minutes"]
    assert len(minutes) == 60
    starts = [datetime.fromisoformat(m["start"]) for m in minutes]
    assert starts[-1] == datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    assert starts[0] == datetime(2031, 5, 6, 6, 9, tzinfo=UTC)
    assert starts == sorted(starts)
    current = minutes[-1]
    assert (current["completed"], current["failed"], current["started"]) == (1, 2, 3)
    # One claim statement, one claimed_at: the lags differ exactly as the run_at times do.
    # Nearest rank over [30+d, 60+d, 90+d]: p50 is the middle one, p99 the largest.
    assert current["lag_p50_s"] >= 60.0
    assert current["lag_p99_s"] - current["lag_p50_s"] == pytest.approx(30.0)
    assert all(m["started"] == 0 and m["lag_p50_s"] is None for m in minutes[:-1])


async def test_a_read_token_is_enough_and_none_is_refused(store: PostgresStore) -> None:
    settings = Settings(http={"tokens": [{"name": "r", "token": READ_TOKEN, "role": "read"}]})
    async with serve(store, settings=settings) as api:
        stats = await _stats(api, headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert stats["counts"]["by_status"] == dict.fromkeys(STATUSES, 0)
        async with api.get("/v1/stats") as resp:
            assert resp.status == 401


async def test_a_database_that_cannot_answer_is_a_503_problem(database_url: str) -> None:
    pool = await create_pool(database_url, 2)
    await pool.close()  # every query now fails as when the database is gone
    async with serve(PostgresStore(pool)) as api, api.get("/v1/stats") as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 503, body
        assert resp.content_type == "application/problem+json"
        assert body["title"] == "Task counts unavailable"


async def test_the_route_is_in_the_openapi_document(store: PostgresStore) -> None:
    async with serve(store) as api, api.get("/openapi.json") as resp:
        doc = await resp.json()
    operation = doc["paths"]["/v1/stats"]["get"]
    assert operation["x-required-role"] == "read"
    schema = doc["components"]["schemas"]["Stats"]
    assert set(schema["properties"]) >= {
        "generated_at",
        "window_s",
        "ready",
        "problems",
        "counts",
        "minutes",
    }
