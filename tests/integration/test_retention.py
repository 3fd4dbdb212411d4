"""Retention against a real PostgreSQL: which finished tasks the pruner deletes, in batches, with
their attempts, what the archive keeps, and the pruner's loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest

from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.engine.pruner import Pruner
from scheduler_daemon.settings import RetentionSettings
from scheduler_daemon.store import queries
from scheduler_daemon.store.postgres import PostgresStore
from scheduler_daemon.store.retention import PostgresRetentionStore
from tests.fakes import FakeClock

DAY_S = 86_400.0


class CountingStore:
    """The real store, recording each statement's count; ``fail`` first calls raise."""

    def __init__(self, inner: PostgresRetentionStore, fail: int = 0) -> None:
        self.inner = inner
        self.fail = fail
        self.calls: list[int] = []

    async def prune(
        self, completed_after_s: float, failed_after_s: float, limit: int, archive: bool
    ) -> int:
        if self.fail:
            self.fail -= 1
            raise OSError("connection refused")
        count = await self.inner.prune(completed_after_s, failed_after_s, limit, archive)
        self.calls.append(count)
        return count


class Settable:
    """A settings source the test can swap, as a reload does."""

    def __init__(self, value: RetentionSettings) -> None:
        self.value = value

    def __call__(self) -> RetentionSettings:
        return self.value


def retention(**changes: object) -> RetentionSettings:
    return RetentionSettings.model_validate({"batch_size": 500, **changes})


async def make(
    store: PostgresStore,
    pool: asyncpg.Pool,
    status: TaskStatus,
    age_days: float,
    *,
    attempts: int = 0,
) -> uuid.UUID:
    """A task in ``status`` that finished ``age_days`` ago (for the unfinished statuses, every
    timestamp is that old: age alone must never get them deleted)."""
    task, _ = await store.create_task(NewTask(action="noop", payload={"s": status.value}))
    await pool.execute(
        """
        UPDATE tasks
        SET status = $2, attempts = $4,
            lease_owner = CASE WHEN $2 = 'running' THEN 'someone' END,
            lease_expires_at = CASE WHEN $2 = 'running' THEN now() + interval '1 hour' END,
            finished_at = now() - make_interval(secs => $3),
            created_at = now() - make_interval(secs => $3),
            updated_at = now() - make_interval(secs => $3),
            run_at = now() - make_interval(secs => $3)
        WHERE id = $1
        """,
        task.id,
        status.value,
        age_days * DAY_S,
        attempts,
    )
    if attempts:
        await pool.execute(
            """
            INSERT INTO task_attempts (task_id, number, worker, outcome, started_at,
                                       finished_at, duration_ms, error, output)
            SELECT $1, n, 'w' || n, 'failed', now() - interval '1 hour', now(), 1.5 * n,
                   'boom ' || n, 'out ' || n
            FROM generate_series(1, $2) n
            """,
            task.id,
            attempts,
        )
    return task.id


async def age(pool: asyncpg.Pool, ids: Sequence[uuid.UUID], days: float) -> None:
    await pool.execute(
        "UPDATE tasks SET finished_at = now() - make_interval(secs => $2) WHERE id = ANY($1)",
        list(ids),
        days * DAY_S,
    )


async def existing(pool: asyncpg.Pool, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    rows = await pool.fetch("SELECT id FROM tasks WHERE id = ANY($1)", list(ids))
    return {r["id"] for r in rows}


async def attempt_count(pool: asyncpg.Pool, ids: Sequence[uuid.UUID]) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM task_attempts WHERE task_id = ANY($1)", list(ids)
    )
    return count


async def test_expired_tasks_are_deleted_in_batches_with_their_attempts(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    expired = [await make(store, pool, TaskStatus.COMPLETED, 8, attempts=2) for _ in range(7)]
    fresh = await make(store, pool, TaskStatus.COMPLETED, 6, attempts=1)
    assert await attempt_count(pool, expired) == 14

    counting = CountingStore(PostgresRetentionStore(pool))
    pruner = Pruner(counting, FakeClock(), lambda: retention(batch_size=3))
    assert await pruner.sweep() == 7

    assert counting.calls == [3, 3, 1]  # a statement per batch, until one comes back short
    assert pruner.pruned_total == 7
    assert await existing(pool, expired) == set()
    assert await attempt_count(pool, expired) == 0
    assert await existing(pool, [fresh]) == {fresh}
    assert await attempt_count(pool, [fresh]) == 1

    assert await pruner.sweep() == 0
    assert counting.calls[-1] == 0
    assert pruner.pruned_total == 7


async def test_windows_by_status_and_unfinished_tasks_stay(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    completed_old = await make(store, pool, TaskStatus.COMPLETED, 7.5)
    completed_new = await make(store, pool, TaskStatus.COMPLETED, 6.5)
    failed_mid = await make(store, pool, TaskStatus.FAILED, 8)  # past 7 days, not past 30
    failed_old = await make(store, pool, TaskStatus.FAILED, 31)
    # Cancelled through the API's own statement, which sets finished_at; then made old.
    cancel_me, _ = await store.create_task(NewTask(action="noop", payload={}, delay_s=3600))
    assert await store.cancel_task(cancel_me.id) is not None
    await age(pool, [cancel_me.id], 8)
    cancelled_new = await make(store, pool, TaskStatus.CANCELLED, 1)
    unfinished = [
        await make(store, pool, status, 365)
        for status in (TaskStatus.SCHEDULED, TaskStatus.RUNNING, TaskStatus.WAITING)
    ]

    pruned = await PostgresRetentionStore(pool).prune(7 * DAY_S, 30 * DAY_S, 500, False)

    assert pruned == 3
    everything = [
        completed_old,
        completed_new,
        failed_mid,
        failed_old,
        cancel_me.id,
        cancelled_new,
        *unfinished,
    ]
    assert await existing(pool, everything) == {
        completed_new,
        failed_mid,
        cancelled_new,
        *unfinished,
    }


async def test_oldest_first_across_both_windows(store: PostgresStore, pool: asyncpg.Pool) -> None:
    failed = await make(store, pool, TaskStatus.FAILED, 40)
    completed = [await make(store, pool, TaskStatus.COMPLETED, d) for d in (10, 20, 30)]
    retention_store = PostgresRetentionStore(pool)

    assert await retention_store.prune(7 * DAY_S, 30 * DAY_S, 2, False) == 2
    assert await existing(pool, [failed, *completed]) == set(completed[:2])
    assert await retention_store.prune(7 * DAY_S, 30 * DAY_S, 2, False) == 2
    assert await existing(pool, [failed, *completed]) == set()


async def test_archive_copies_tasks_and_attempts_before_deleting(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    # A task through the real claim and completion path: a failed attempt, a retry, a success.
    task, _ = await store.create_task(
        NewTask(action="noop", payload={"order": 42}, metadata={"team": "billing"})
    )
    for number, outcome, status in (
        (1, Outcome.FAILED, TaskStatus.SCHEDULED),
        (2, Outcome.SUCCEEDED, TaskStatus.COMPLETED),
    ):
        [claimed] = await store.claim("worker-a", 1, 30.0)
        assert claimed.attempt == number
        result = AttemptResult(
            task.id,
            number,
            outcome,
            status,
            retry_in_s=0.0,
            error="boom" if outcome is Outcome.FAILED else None,
            output=f"out {number}",
            result={"ok": True} if outcome is Outcome.SUCCEEDED else None,
            duration_ms=12.5,
        )
        assert await store.complete("worker-a", [result]) == {task.id}
    other = await make(store, pool, TaskStatus.FAILED, 31, attempts=3)
    kept = await make(store, pool, TaskStatus.COMPLETED, 1, attempts=1)
    await age(pool, [task.id], 8)

    columns = "id, action, payload, metadata, status, attempts, result, last_error, finished_at"
    before = {
        r["id"]: dict(r)
        for r in await pool.fetch(
            f"SELECT {columns} FROM tasks WHERE id = ANY($1)", [task.id, other]
        )
    }
    attempt_columns = "task_id, number, worker, outcome, started_at, finished_at, error, output"
    attempts_before = [
        dict(r)
        for r in await pool.fetch(
            f"SELECT {attempt_columns} FROM task_attempts WHERE task_id = ANY($1) "
            "ORDER BY task_id, number",
            [task.id, other],
        )
    ]
    assert len(attempts_before) == 5

    pruner = Pruner(PostgresRetentionStore(pool), FakeClock(), lambda: retention(archive=True))
    assert await pruner.sweep() == 2

    assert await existing(pool, [task.id, other, kept]) == {kept}
    assert await attempt_count(pool, [task.id, other]) == 0
    archived = {
        r["id"]: dict(r)
        for r in await pool.fetch(f"SELECT {columns} FROM tasks_archive ORDER BY id")
    }
    assert archived == before
    assert archived[task.id]["payload"] == {"order": 42}
    assert archived[task.id]["result"] == {"ok": True}
    attempts_after = [
        dict(r)
        for r in await pool.fetch(
            f"SELECT {attempt_columns} FROM task_attempts_archive ORDER BY task_id, number"
        )
    ]
    assert attempts_after == attempts_before
    assert [a["worker"] for a in attempts_after if a["task_id"] == task.id] == [
        "worker-a",
        "worker-a",
    ]
    stamps = await pool.fetchval(
        "SELECT count(*) FROM tasks_archive WHERE archived_at > now() - interval '1 minute'"
    )
    assert stamps == 2


async def test_without_archive_nothing_is_copied(store: PostgresStore, pool: asyncpg.Pool) -> None:
    await make(store, pool, TaskStatus.COMPLETED, 8, attempts=2)
    assert await PostgresRetentionStore(pool).prune(7 * DAY_S, 30 * DAY_S, 500, False) == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks_archive") == 0
    assert await pool.fetchval("SELECT count(*) FROM task_attempts_archive") == 0


async def test_archive_tables_have_every_column(pool: asyncpg.Pool) -> None:
    """A column added to tasks or task_attempts must reach the archive and its INSERTs."""

    async def columns(table: str) -> list[str]:
        rows = await pool.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
        return [r["column_name"] for r in rows]

    def listed(text: str) -> list[str]:
        return [c.strip() for c in text.split(",")]

    for live, archive, named in (
        ("tasks", "tasks_archive", queries.ARCHIVE_TASK_COLUMNS),
        ("task_attempts", "task_attempts_archive", queries.ARCHIVE_ATTEMPT_COLUMNS),
    ):
        live_columns = await columns(live)
        assert sorted(await columns(archive)) == sorted([*live_columns, "archived_at"])
        assert sorted(listed(named)) == sorted(live_columns)


async def test_a_dependency_is_kept_while_a_task_waits_for_it(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    done = await make(store, pool, TaskStatus.COMPLETED, 1)
    pending, _ = await store.create_task(NewTask(action="noop", payload={}, delay_s=3600))
    waiter, _ = await store.create_task(
        NewTask(action="noop", payload={}, depends_on=(done, pending.id))
    )
    assert waiter.status is TaskStatus.WAITING
    await age(pool, [done], 30)
    retention_store = PostgresRetentionStore(pool)

    assert await retention_store.prune(7 * DAY_S, 30 * DAY_S, 500, False) == 0
    assert await existing(pool, [done]) == {done}

    # The other dependency completes: the waiter is released, and nothing keeps `done` now.
    await pool.execute(
        "UPDATE tasks SET status = 'completed', finished_at = now() WHERE id = $1", pending.id
    )
    released = await store.get_task(waiter.id)
    assert released is not None
    assert released.status is TaskStatus.SCHEDULED
    assert await retention_store.prune(7 * DAY_S, 30 * DAY_S, 500, False) == 1
    assert await existing(pool, [done, pending.id, waiter.id]) == {pending.id, waiter.id}
    deps = await pool.fetch(
        "SELECT depends_on_id FROM task_dependencies WHERE task_id = $1", waiter.id
    )
    assert [r["depends_on_id"] for r in deps] == [pending.id]


async def test_a_failed_dependency_and_its_cancelled_dependents_expire(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    dep, _ = await store.create_task(NewTask(action="noop", payload={}, delay_s=3600))
    waiter, _ = await store.create_task(NewTask(action="noop", payload={}, depends_on=(dep.id,)))
    await pool.execute(
        "UPDATE tasks SET status = 'failed', finished_at = now() WHERE id = $1", dep.id
    )
    cancelled = await store.get_task(waiter.id)
    assert cancelled is not None
    assert cancelled.status is TaskStatus.CANCELLED  # the trigger cancelled it
    await age(pool, [dep.id, waiter.id], 31)

    assert await PostgresRetentionStore(pool).prune(7 * DAY_S, 30 * DAY_S, 500, False) == 2
    assert await existing(pool, [dep.id, waiter.id]) == set()
    assert await pool.fetchval("SELECT count(*) FROM task_dependencies") == 0


async def test_a_pruned_task_hands_its_eventbridge_schedule_to_the_deletions(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    task_id = await make(store, pool, TaskStatus.CANCELLED, 8)
    await pool.execute("UPDATE tasks SET aws_schedule = 'task-x-1' WHERE id = $1", task_id)
    assert await PostgresRetentionStore(pool).prune(7 * DAY_S, 30 * DAY_S, 500, True) == 1
    assert await pool.fetchval("SELECT name FROM eventbridge_deletions") == "task-x-1"
    assert await pool.fetchval("SELECT aws_schedule FROM tasks_archive") == "task-x-1"


async def test_concurrent_pruners_share_the_work(store: PostgresStore, pool: asyncpg.Pool) -> None:
    ids = [await make(store, pool, TaskStatus.COMPLETED, 8, attempts=1) for _ in range(40)]
    pruners = [
        Pruner(
            PostgresRetentionStore(pool), FakeClock(), lambda: retention(batch_size=3, archive=True)
        )
        for _ in range(3)
    ]
    counts = await asyncio.gather(*(p.sweep() for p in pruners))
    # A batch cut short by rows another pruner held ends that sweep early; another pass
    # deletes what is left.
    rest = await pruners[0].sweep()
    assert sum(counts) + rest == 40
    assert await existing(pool, ids) == set()
    assert await pool.fetchval("SELECT count(DISTINCT id) FROM tasks_archive") == 40
    assert await pool.fetchval("SELECT count(*) FROM tasks_archive") == 40
    assert await pool.fetchval("SELECT count(*) FROM task_attempts_archive") == 40


async def test_run_applies_changed_settings(store: PostgresStore, pool: asyncpg.Pool) -> None:
    three_days = await make(store, pool, TaskStatus.COMPLETED, 3)
    clock = FakeClock()
    settings = Settable(retention(completed_days=7, interval_s=60))
    pruner = Pruner(PostgresRetentionStore(pool), clock, settings)
    runner = asyncio.create_task(pruner.run())
    try:
        await clock.wait_for_sleepers(1)
        assert clock.deadlines == [60.0]
        assert await existing(pool, [three_days]) == {three_days}

        settings.value = retention(completed_days=2, interval_s=30)  # a reload
        await clock.advance(60)
        await clock.wait_for_sleepers(1)
        assert clock.deadlines == [30.0]
        assert await existing(pool, [three_days]) == set()
        assert pruner.pruned_total == 1
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_run_survives_database_errors(store: PostgresStore, pool: asyncpg.Pool) -> None:
    expired = await make(store, pool, TaskStatus.FAILED, 31)
    clock = FakeClock()
    failing = CountingStore(PostgresRetentionStore(pool), fail=1)
    pruner = Pruner(failing, clock, lambda: retention(interval_s=5))
    runner = asyncio.create_task(pruner.run())
    try:
        await clock.wait_for_sleepers(1)  # the pass failed; it waits for the next interval
        assert clock.deadlines == [5.0]
        assert await existing(pool, [expired]) == {expired}

        await clock.advance(5)
        await clock.wait_for_sleepers(1)
        assert await existing(pool, [expired]) == set()
        assert failing.calls == [1]
        assert not runner.done()
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
