"""Claiming, fencing, leases and rescue against a real PostgreSQL: what only the database
shows (concurrent claimers, plans, leases expired on its clock). What every store must do is
in tests/contract/, run against PostgreSQL too."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.store import queries
from scheduler_daemon.store.postgres import PostgresStore


def _noop(**kw: object) -> NewTask:
    return NewTask(action="noop", payload={}, **kw)  # type: ignore[arg-type]


def _success(task_id: uuid.UUID, attempt: int) -> AttemptResult:
    return AttemptResult(
        task_id=task_id,
        attempt=attempt,
        outcome=Outcome.SUCCEEDED,
        next_status=TaskStatus.COMPLETED,
        output="ok",
        duration_ms=1.0,
    )


async def test_concurrent_claimers_never_share_a_task(store: PostgresStore) -> None:
    total = 2000
    await store.create_tasks([_noop() for _ in range(total)])

    async def claimer(owner: str) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        while True:
            batch = await store.claim(owner, 37, 30.0)
            if not batch:
                return got
            got.extend(c.id for c in batch)

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(6)))
    every = [task_id for ids in results for task_id in ids]
    assert len(every) == total
    assert len(set(every)) == total
    # More than one claimer took part, so the claims really did overlap.
    assert sum(1 for ids in results if ids) > 1


async def test_stale_owner_completion_changes_nothing(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    task, _ = await store.create_task(_noop())
    [first] = await store.claim("old", 1, 30.0)
    # The old owner's lease runs out; the rescuer hands the task to a new owner.
    await pool.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 s'")
    rescued = await store.rescue_expired(10)
    assert [(r.task_id, r.status) for r in rescued] == [(task.id, TaskStatus.SCHEDULED)]
    [second] = await store.claim("new", 1, 30.0)
    assert second.attempt == 2

    stale = await store.complete("old", [_success(task.id, first.attempt)])
    assert stale == set()
    assert await store.renew_leases("old", [(task.id, first.attempt)], 30.0) == set()
    # Even the right owner with the wrong attempt number is fenced out.
    assert await store.complete("new", [_success(task.id, first.attempt)]) == set()
    row = await store.get_task(task.id)
    assert row is not None
    assert row.status is TaskStatus.RUNNING
    assert row.lease_owner == "new"

    assert await store.complete("new", [_success(task.id, second.attempt)]) == {task.id}
    attempts = await store.list_attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, Outcome.LOST),
        (2, Outcome.SUCCEEDED),
    ]


async def test_retries_until_failed(store: PostgresStore, pool: asyncpg.Pool) -> None:
    task, _ = await store.create_task(_noop(max_attempts=3))
    for attempt in (1, 2, 3):
        [claimed] = await store.claim("a", 1, 30.0)
        assert claimed.attempt == attempt
        last = attempt == 3
        result = AttemptResult(
            task_id=task.id,
            attempt=attempt,
            outcome=Outcome.FAILED,
            next_status=TaskStatus.FAILED if last else TaskStatus.SCHEDULED,
            retry_in_s=None if last else 60.0,
            error=f"boom {attempt}",
        )
        assert await store.complete("a", [result]) == {task.id}
        if not last:
            row = await store.get_task(task.id)
            assert row is not None
            assert row.status is TaskStatus.SCHEDULED
            delay = await store.next_due_in()
            assert delay is not None
            assert 50 < delay <= 60
            assert await store.claim("a", 1, 30.0) == []  # backing off
            await pool.execute("UPDATE tasks SET run_at = now() WHERE id = $1", task.id)
    row = await store.get_task(task.id)
    assert row is not None
    assert row.status is TaskStatus.FAILED
    assert row.last_error == "boom 3"
    outcomes = [a.outcome for a in await store.list_attempts(task.id)]
    assert outcomes == [Outcome.FAILED] * 3


async def test_cancel_only_before_start(store: PostgresStore) -> None:
    later, _ = await store.create_task(_noop(delay_s=600))
    cancelled = await store.cancel_task(later.id)
    assert cancelled is not None
    assert cancelled.status is TaskStatus.CANCELLED
    now, _ = await store.create_task(_noop())
    await store.claim("a", 1, 30.0)
    assert await store.cancel_task(now.id) is None
    assert await store.claim("a", 5, 30.0) == []


async def test_claim_walks_the_claim_index(store: PostgresStore, pool: asyncpg.Pool) -> None:
    # The statement discovery runs, as planned on fresh statistics of a table whose tasks all
    # sit in one queue and are all due: the plan must read the claim index in order and stop
    # at the limit, not sort the backlog.
    await store.create_tasks([_noop() for _ in range(3000)])
    await pool.execute("ANALYZE tasks")
    rows = await pool.fetch("EXPLAIN " + queries.CLAIM, 50, "a", 30.0, None)
    text = "\n".join(r[0] for r in rows)
    assert "tasks_claim_idx" in text, text
    assert "Sort" not in text, text
    assert "Seq Scan on tasks" not in text, text


async def test_rescuer_counts_lost_attempts(store: PostgresStore, pool: asyncpg.Pool) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from scheduler_daemon.clock import SystemClock
    from scheduler_daemon.engine.leases import Rescuer
    from scheduler_daemon.metrics import Metrics

    await store.create_task(NewTask(action="log", payload={}, queue="mail"))
    await store.claim("gone", 1, 30.0)
    await pool.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 s'")
    metrics = Metrics()
    rescuer = Rescuer(store, SystemClock(), interval_s=lambda: 60.0, metrics=metrics)
    assert await rescuer.sweep() == 1
    samples = [
        s
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == "scheduler_tasks_finished_total"
    ]
    assert [(s.labels, s.value) for s in samples] == [
        ({"action": "log", "queue": "mail", "outcome": "lost"}, 1.0)
    ]


async def test_a_store_claims_only_the_actions_it_runs(store: PostgresStore) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    created = await store.create_tasks(
        [
            NewTask(action="reports.build", payload={}, run_at=past - timedelta(seconds=5)),
            NewTask(action="noop", payload={}, run_at=past),
            NewTask(action="reports.build", payload={}, run_at=past, queue="mail"),
            NewTask(action="noop", payload={}, run_at=past, queue="mail"),
        ]
    )
    unknown, plain, unknown_mail, plain_mail = [t.id for t, _ in created]
    daemon = PostgresStore(store.pool, runnable=["noop", "webhook"])
    # Nothing of its actions is due after these claims: next_due_in does not count the rest.
    assert {c.id for c in await daemon.claim("a", 10, 30.0, exclude=["mail"])} == {plain}
    assert {c.id for c in await daemon.claim_queue("a", "mail", 10, 30.0, None)} == {plain_mail}
    assert await daemon.next_due_in() is None
    assert await daemon.next_due_in(["default"]) is None
    # A store for every action (the API's, a newer daemon's) sees and takes them.
    everything = await store.next_due_in()
    assert everything is not None
    assert everything < 0
    assert {c.id for c in await store.claim("b", 10, 30.0)} == {unknown, unknown_mail}


async def test_completion_finds_its_rows_by_primary_key(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    # With many tasks running (other daemons' too), a completion must not read through all of
    # them: the statement reaches its rows by primary key, also on statistics from before the
    # tasks started (the table analysed while they were all scheduled, as after a quiet time).
    await store.create_tasks([_noop() for _ in range(3000)])
    await pool.execute("ANALYZE tasks")
    await store.claim("others", 2990, 30.0)
    [mine] = await store.claim("a", 1, 30.0)
    rows = await pool.fetch(
        "EXPLAIN " + queries.COMPLETE,
        "a",
        [mine.id],
        [mine.attempt],
        ["succeeded"],
        ["completed"],
        [0.0],
        [None],
        [None],
        [None],
        [1.0],
    )
    text = "\n".join(r[0] for r in rows)
    assert "tasks_pkey" in text, text
    assert "tasks_status_created_idx" not in text, text
    assert "Seq Scan on tasks" not in text, text
