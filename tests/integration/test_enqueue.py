"""Transactional enqueue on a service's own connection (seed 003): a task scheduled inside a
transaction exists, and wakes the daemon, only if that transaction commits."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from scheduler_daemon.actions.base import PayloadInvalid, UnknownAction
from scheduler_daemon.app import default_actions
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.errors import IdempotencyConflict, UnknownDependencies
from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.enqueue import TaskInvalid, enqueue, enqueue_many
from scheduler_daemon.store.listener import NotificationListener
from scheduler_daemon.store.postgres import PostgresStore, insert_tasks
from tests.integration.test_wakeup import Recorder


class Rollback(Exception):
    """Raised to make the service's transaction roll back."""


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A service's own connection: plain asyncpg, none of the store's type codecs."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def recorder(database_url: str) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    listener = NotificationListener(database_url, recorder, SystemClock(), check_interval_s=0.5)
    task = asyncio.create_task(listener.run())
    assert await recorder.next() is None  # the "look now" sent on connect
    yield recorder
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _count(conn: asyncpg.Connection, table: str = "tasks") -> int:
    value = await conn.fetchval(f"SELECT count(*) FROM {table}")
    assert isinstance(value, int)
    return value


async def test_rolled_back_task_never_existed_nor_notified(
    conn: asyncpg.Connection, store: PostgresStore, recorder: Recorder
) -> None:
    with contextlib.suppress(Rollback):  # the service's request fails after scheduling
        async with conn.transaction():
            task_id = await enqueue(conn, "noop", {"n": 1})
            assert await _count(conn) == 1  # visible inside the transaction only
            assert await store.get_task(task_id) is None
            raise Rollback
    assert await store.get_task(task_id) is None
    assert await _count(conn) == 0

    async with conn.transaction():
        marker = await enqueue(conn, "noop", delay_s=40)
    # The first notification to arrive is the marker's (due in 40 s): the rolled-back insert
    # (due at once) was never delivered.
    delay = await recorder.next()
    assert delay is not None
    assert 30 < delay <= 40
    assert recorder.seen == [None, delay]
    assert (await store.get_task(marker)) is not None


async def test_rollback_removes_savepoint_work_too(
    conn: asyncpg.Connection, store: PostgresStore
) -> None:
    """Dependencies and idempotency keys take several statements (a savepoint inside the
    caller's transaction): the caller's rollback still removes all of it."""
    first = await enqueue(conn, "noop", delay_s=600)  # committed (no transaction open)
    with contextlib.suppress(Rollback):
        async with conn.transaction():
            await enqueue(conn, "noop", depends_on=[first], idempotency_key="once")
            raise Rollback
    assert await _count(conn) == 1
    assert await _count(conn, "task_dependencies") == 0
    assert await conn.fetchval("SELECT has_dependents FROM tasks WHERE id = $1", first) is False
    # The key was never used: it creates a task now.
    again = await enqueue(conn, "noop", depends_on=[first], idempotency_key="once")
    task = await store.get_task(again)
    assert task is not None
    assert task.status is TaskStatus.WAITING


async def test_committed_with_the_services_own_rows(
    conn: asyncpg.Connection, store: PostgresStore, recorder: Recorder
) -> None:
    await conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text NOT NULL)")
    async with conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders (note) VALUES ('paid') RETURNING id")
        task_id = await enqueue(
            conn,
            "log",
            {"message": f"order {order_id} paid"},
            metadata={"order_id": order_id},
            priority=5,
        )
        assert await store.get_task(task_id) is None  # not committed yet
    assert await conn.fetchval("SELECT note FROM orders WHERE id = $1", order_id) == "paid"
    task = await store.get_task(task_id)
    assert task is not None
    assert task.status is TaskStatus.SCHEDULED
    assert task.payload == {"message": f"order {order_id} paid"}
    assert task.metadata == {"order_id": order_id}
    assert task.priority == 5

    delay = await recorder.next()
    assert delay is not None
    assert delay <= 0.05

    [claimed] = await store.claim("worker-1", 10, 30.0)
    assert claimed.id == task_id
    assert claimed.payload == {"message": f"order {order_id} paid"}
    # The service's connection is as it was: jsonb still reads as text there.
    assert await conn.fetchval("""SELECT '{"a": 1}'::jsonb""") == '{"a": 1}'


async def test_validate_like_the_api(conn: asyncpg.Connection, store: PostgresStore) -> None:
    actions = default_actions()
    with pytest.raises(PayloadInvalid) as invalid:
        await enqueue(conn, "webhook", {"url": "not a url"}, validate=actions)
    assert [e.field for e in invalid.value.errors] == ["payload.url"]
    assert "payload.url" in str(invalid.value)
    with pytest.raises(UnknownAction, match=r"known: .*webhook"):
        await enqueue(conn, "no-such-action", validate=actions)
    assert await _count(conn) == 0

    # A valid payload is stored as the API stores it (seed 001's "data" becomes "json").
    task_id = await enqueue(
        conn, "webhook", {"url": "https://example.com/hook", "data": {"a": 1}}, validate=actions
    )
    task = await store.get_task(task_id)
    assert task is not None
    assert task.payload == {"url": "https://example.com/hook", "json": {"a": 1}}
    # Without a registry any action name is taken (a handler the daemon registers later).
    assert await enqueue(conn, "billing.close_month") is not None


async def test_idempotency_key_across_transactions(
    conn: asyncpg.Connection, store: PostgresStore
) -> None:
    async with conn.transaction():
        first = await enqueue(conn, "noop", {"n": 1}, idempotency_key="order-7", delay_s=600)
    async with conn.transaction():
        second = await enqueue(conn, "noop", {"n": 1}, idempotency_key="order-7", delay_s=600)
    assert second == first
    assert await _count(conn) == 1

    # The same key for a different request: refused, and the service's transaction goes on.
    async with conn.transaction():
        with pytest.raises(IdempotencyConflict):
            await enqueue(conn, "noop", {"n": 2}, idempotency_key="order-7", delay_s=600)
        assert await conn.fetchval("SELECT 1") == 1
    assert await _count(conn) == 1


async def test_dependency_in_the_same_transaction(
    conn: asyncpg.Connection, store: PostgresStore
) -> None:
    async with conn.transaction():
        a = await enqueue(conn, "noop", delay_s=600)
        b = await enqueue(conn, "noop", depends_on=[a])
    task_b = await store.get_task(b)
    assert task_b is not None
    assert task_b.status is TaskStatus.WAITING
    assert task_b.depends_on == (a,)
    deps = await conn.fetch("SELECT task_id, depends_on_id FROM task_dependencies")
    assert [(r["task_id"], r["depends_on_id"]) for r in deps] == [(b, a)]

    missing = NewTask(action="noop", payload={}).id
    with pytest.raises(UnknownDependencies) as unknown:
        await enqueue(conn, "noop", depends_on=[missing])
    assert unknown.value.missing == [missing]
    assert await _count(conn) == 2


async def test_bad_arguments_name_the_field(conn: asyncpg.Connection) -> None:
    naive = datetime.now(UTC).replace(tzinfo=None)
    with pytest.raises(ValueError, match="run_at"):
        await enqueue(conn, "noop", run_at=naive)
    with pytest.raises(ValueError, match="run_at"):
        await enqueue(conn, "noop", run_at=datetime.now(UTC), delay_s=5)
    with pytest.raises(TaskInvalid, match="max_attempts") as invalid:
        await enqueue(conn, "noop", max_attempts=0)
    assert [e.field for e in invalid.value.errors] == ["max_attempts"]
    with pytest.raises(TaskInvalid, match="payload"):
        await enqueue(conn, "noop", {"when": datetime.now(UTC)})
    with pytest.raises(TaskInvalid, match="depends_on"):
        await enqueue(conn, "noop", depends_on=NewTask(action="noop", payload={}).id)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tasks\[1\]\.run_at"):
        await enqueue_many(
            conn, [NewTask(action="noop", payload={}), NewTask("noop", {}, run_at=naive)]
        )
    assert await _count(conn) == 0


async def test_enqueue_many_one_statement_one_notification(
    conn: asyncpg.Connection, store: PostgresStore, recorder: Recorder
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=20)
    tasks = [
        NewTask(action="noop", payload={"i": i}, run_at=soon + timedelta(seconds=i))
        for i in range(5)
    ]
    async with conn.transaction():
        ids = await enqueue_many(conn, tasks)
    assert ids == [t.id for t in tasks]
    first = await recorder.next()
    assert first is not None
    assert 10 < first <= 20
    await enqueue(conn, "noop", delay_s=50)  # a later marker: nothing else came in between
    marker = await recorder.next()
    assert marker is not None
    assert marker > 40
    for task in tasks:
        stored = await store.get_task(task.id)
        assert stored is not None
        assert stored.payload == task.payload


async def test_repeat_returns_stored_json_on_either_connection(
    conn: asyncpg.Connection, store: PostgresStore
) -> None:
    """The insert reads jsonb as text, so a JSON string result decodes the same with the
    pool's codec and without it."""
    new = NewTask(action="noop", payload={"k": [1, "x"]}, idempotency_key="k", metadata={"m": 1})
    created, fresh = await store.create_task(new)
    assert fresh
    [claimed] = await store.claim("w", 1, 30.0)
    result = AttemptResult(
        created.id, claimed.attempt, Outcome.SUCCEEDED, TaskStatus.COMPLETED, result="done"
    )
    assert await store.complete("w", [result]) == {created.id}
    repeat = NewTask(action="noop", payload={"k": [1, "x"]}, idempotency_key="k", metadata={"m": 1})
    for original, was_created in (
        await store.create_task(repeat),
        (await insert_tasks(conn, [repeat]))[0],
    ):
        assert not was_created
        assert original.id == created.id
        assert original.result == "done"
        assert original.payload == {"k": [1, "x"]}
        assert original.metadata == {"m": 1}
    row = await conn.fetchval("SELECT result FROM tasks WHERE id = $1", created.id)
    assert json.loads(row) == "done"
