"""The Python client against the real daemon process: every task route, typed results, typed
errors, idempotency, roles and an unreachable daemon."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import aiohttp
import pytest

from scheduler_daemon.client import (
    Conflict,
    Forbidden,
    NotFound,
    SchedulerClient,
    SchedulerError,
    SchedulerUnavailable,
    ServerError,
    Task,
    TaskSpec,
    TaskStatus,
    Unauthorized,
    ValidationFailed,
)
from tests.e2e.conftest import (
    POLL_INTERVAL_S,
    TERMINAL_STATUSES,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    free_port,
)

pytestmark = pytest.mark.e2e

HOUR_S = 3600.0
READER_TOKEN = "r-0123456789abcdef"
WRITER_TOKEN = "w-0123456789abcdef"
TOKENS_ENV = {
    "SCHEDULER_HTTP__TOKENS": (
        f'[{{"name":"reader","token":"{READER_TOKEN}","role":"read"}},'
        f'{{"name":"writer","token":"{WRITER_TOKEN}","role":"write"}}]'
    )
}


@pytest.fixture
async def daemon(start_daemon: StartDaemon) -> DaemonProcess:
    return await start_daemon()


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[SchedulerClient]:
    async with SchedulerClient(daemon.base_url, timeout=10) as c:
        yield c


async def wait_for_status(
    client: SchedulerClient, task_id: uuid.UUID, status: str, timeout: float = 20.0
) -> Task:
    """Poll the task every 50 ms until it has ``status``; fail early on another final one."""
    task: Task | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                task = await client.get_task(task_id)
                if task.status == status:
                    return task
                if task.status in TERMINAL_STATUSES:
                    raise AssertionError(f"task {task_id} ended {task.status}, not {status}")
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"task {task_id} not {status} in {timeout}s: {task}") from None


async def count_tasks(client: SchedulerClient) -> int:
    return len([t async for t in client.iter_tasks(limit=100)])


async def test_create_get_and_list_with_filters(client: SchedulerClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    task = await client.create_task(
        "webhook",
        {"url": "http://127.0.0.1:9/hook", "method": "PUT", "json": {"n": 1}},
        delay_s=HOUR_S,
        queue="reports",
        priority=5,
        max_attempts=4,
        timeout_s=12.5,
        metadata={"owner": "client-test"},
    )
    other = await client.create_task("noop", run_at=datetime.now(UTC) + timedelta(days=2))

    assert isinstance(task, Task)
    assert isinstance(task.id, uuid.UUID)
    assert task.status == TaskStatus.SCHEDULED
    assert (task.action, task.queue, task.priority) == ("webhook", "reports", 5)
    assert (task.max_attempts, task.timeout_s) == (4, 12.5)
    assert task.payload["url"] == "http://127.0.0.1:9/hook"
    assert task.metadata == {"owner": "client-test"}
    assert task.run_at.tzinfo is not None
    assert task.run_at > datetime.now(UTC) + timedelta(minutes=59)

    assert await client.get_task(task.id) == task
    assert await client.get_task(str(task.id)) == task
    assert await client.get_task(task) == task

    page = await client.list_tasks()
    assert [t.id for t in page.items] == [other.id, task.id]
    assert page.next_cursor is None
    assert [t.id for t in (await client.list_tasks(queue="reports")).items] == [task.id]
    assert [t.id for t in (await client.list_tasks(action="noop")).items] == [other.id]
    assert (await client.list_tasks(status="completed")).items == []
    both = await client.list_tasks(status=["scheduled", TaskStatus.RUNNING])
    assert len(both.items) == 2
    # A time filter with a "+" offset survives the query string.
    plus_two = timezone(timedelta(hours=2))
    after = await client.list_tasks(created_after=before.astimezone(plus_two))
    assert len(after.items) == 2
    later = await client.list_tasks(created_after=datetime.now(plus_two) + timedelta(minutes=5))
    assert later.items == []
    due_soon = await client.list_tasks(run_before=datetime.now(UTC) + timedelta(days=1))
    assert [t.id for t in due_soon.items] == [task.id]


async def test_iter_tasks_follows_cursors_newest_first(client: SchedulerClient) -> None:
    created = [await client.create_task("noop", delay_s=HOUR_S) for _ in range(7)]

    first = await client.list_tasks(limit=3)
    assert len(first.items) == 3
    assert first.next_cursor is not None

    seen = [t.id async for t in client.iter_tasks(limit=3)]
    assert seen == [t.id for t in reversed(created)]
    assert [t.id async for t in client.iter_tasks(limit=3, cursor=first.next_cursor)] == seen[3:]


async def test_attempts_of_a_completed_task(client: SchedulerClient) -> None:
    task = await client.create_task("noop")
    done = await wait_for_status(client, task.id, "completed")
    assert done.attempts == 1
    assert done.finished_at is not None

    [attempt] = await client.list_attempts(task.id)
    assert attempt.task_id == task.id
    assert attempt.number == 1
    assert attempt.outcome == "succeeded"
    assert attempt.error is None
    assert attempt.finished_at >= attempt.started_at


async def test_cancel_then_cancel_again_conflicts(client: SchedulerClient) -> None:
    task = await client.create_task("noop", delay_s=HOUR_S)
    cancelled = await client.cancel_task(task.id)
    assert cancelled.id == task.id
    assert cancelled.status == "cancelled"
    assert (await client.get_task(task.id)).status == "cancelled"

    with pytest.raises(Conflict) as info:
        await client.cancel_task(task.id)
    assert info.value.status == 409
    assert info.value.fields == ["status"]
    assert "cancelled" in info.value.errors[0][1]
    assert info.value.problem["status"] == 409
    assert isinstance(info.value, SchedulerError)


async def test_run_task_runs_a_far_future_task_now(client: SchedulerClient) -> None:
    task = await client.create_task("noop", run_at=datetime.now(UTC) + timedelta(days=30))
    moved = await client.run_task(task.id)
    assert moved.status == "scheduled"
    assert moved.run_at <= datetime.now(UTC) + timedelta(seconds=1)

    done = await wait_for_status(client, task.id, "completed")
    assert done.attempts == 1
    with pytest.raises(Conflict):
        await client.run_task(task.id)


async def test_retry_a_failed_task_makes_a_new_attempt(client: SchedulerClient) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    task = await client.create_task("webhook", {"url": closed}, max_attempts=1)
    failed = await wait_for_status(client, task.id, "failed")
    assert failed.last_error
    assert [a.outcome for a in await client.list_attempts(task.id)] == ["failed"]

    with pytest.raises(Conflict):  # only failed or cancelled tasks can be retried
        await client.retry_task((await client.create_task("noop", delay_s=HOUR_S)).id)

    requeued = await client.retry_task(task.id)
    assert requeued.id == task.id
    assert requeued.status == "scheduled"
    assert requeued.last_error is None

    await wait_for_status(client, task.id, "failed")
    attempts = await client.list_attempts(task.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "failed"), (2, "failed")]


async def test_create_tasks_batch_all_or_none(client: SchedulerClient) -> None:
    tasks = await client.create_tasks(
        [
            TaskSpec("noop", delay_s=HOUR_S, queue="batch"),
            {"action": "log", "payload": {"message": "hi"}, "delay_s": HOUR_S, "queue": "batch"},
            TaskSpec("noop", run_at=datetime.now(UTC) + timedelta(hours=2), priority=3),
        ]
    )
    assert [t.action for t in tasks] == ["noop", "log", "noop"]
    assert [t.queue for t in tasks] == ["batch", "batch", "default"]
    assert tasks[2].priority == 3
    assert len({t.id for t in tasks}) == 3
    assert await count_tasks(client) == 3

    with pytest.raises(ValidationFailed) as info:
        await client.create_tasks(
            [
                TaskSpec("noop", delay_s=HOUR_S),
                {"action": "webhook", "payload": {"url": "not a url"}},
                TaskSpec("noop"),
            ]
        )
    assert info.value.status == 422
    assert info.value.fields == ["tasks[1].payload.url"]
    assert await count_tasks(client) == 3


async def test_unknown_task_is_not_found(client: SchedulerClient) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as info:
        await client.get_task(missing)
    assert info.value.status == 404
    assert str(missing) in (info.value.detail or "")
    for call in (client.list_attempts, client.cancel_task, client.run_task, client.retry_task):
        with pytest.raises(NotFound):
            await call(missing)
    with pytest.raises(NotFound):
        await client.get_task("not-a-uuid")


async def test_idempotency_key(client: SchedulerClient) -> None:
    first = await client.create_task("noop", {}, delay_s=HOUR_S, idempotency_key="order-42")
    again = await client.create_task("noop", {}, delay_s=HOUR_S, idempotency_key="order-42")
    assert again.id == first.id
    assert again.idempotency_key == "order-42"

    with pytest.raises(Conflict) as info:
        await client.create_task("noop", delay_s=2 * HOUR_S, idempotency_key="order-42")
    assert info.value.status == 409
    assert info.value.fields == ["idempotency_key"]
    assert await count_tasks(client) == 1


async def test_invalid_input_raises_validation_failed(client: SchedulerClient) -> None:
    with pytest.raises(ValidationFailed) as info:
        await client.create_task("no-such-action")
    assert info.value.fields == ["action"]
    with pytest.raises(ValidationFailed) as info:
        await client.create_task("noop", delay_s=1, run_at=datetime.now(UTC))
    assert info.value.status == 422
    with pytest.raises(ValidationFailed) as info:
        await client.list_tasks(limit=0)
    assert info.value.fields == ["limit"]


async def test_naive_datetimes_are_refused_before_sending() -> None:
    # Nothing listens there: a ValueError proves no request was attempted.
    async with SchedulerClient(f"http://127.0.0.1:{free_port()}") as client:
        naive = datetime(2030, 1, 1, 12, 0)  # noqa: DTZ001 - the point of the test
        with pytest.raises(ValueError, match="run_at"):
            await client.create_task("noop", run_at=naive)
        with pytest.raises(ValueError, match="created_before"):
            await client.list_tasks(created_before=naive)
        with pytest.raises(ValueError, match=r"run_after"):
            await anext(client.iter_tasks(run_after=naive))
        with pytest.raises(ValueError, match=r"tasks\[1\]\.run_at"):
            await client.create_tasks([TaskSpec("noop"), {"action": "noop", "run_at": naive}])


async def test_health_and_readiness(client: SchedulerClient) -> None:
    assert await client.health() is True
    # daemon_started is logged before the LISTEN connection is up, so readiness may lag it
    # by a moment: poll as a readiness probe would.
    readiness = await client.ready()
    async with asyncio.timeout(10):
        while not readiness[0]:
            assert readiness[1], "not ready without a reason"
            await asyncio.sleep(POLL_INTERVAL_S)
            readiness = await client.ready()
    assert readiness == (True, [])


async def test_roles(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(TOKENS_ENV)
    async with SchedulerClient(daemon.base_url) as anonymous:
        with pytest.raises(Unauthorized) as info:
            await anonymous.list_tasks()
        assert info.value.status == 401
        assert await anonymous.health() is True  # health needs no token

    async with SchedulerClient(daemon.base_url, WRITER_TOKEN[:-1] + "0") as wrong:
        with pytest.raises(Unauthorized):
            await wrong.get_task(uuid.uuid4())

    async with SchedulerClient(daemon.base_url, READER_TOKEN) as reader:
        assert (await reader.list_tasks()).items == []
        with pytest.raises(Forbidden) as forbidden:
            await reader.create_task("noop")
        assert forbidden.value.status == 403
        assert "reader" in (forbidden.value.detail or "")

    async with SchedulerClient(daemon.base_url, WRITER_TOKEN) as writer:
        task = await writer.create_task("noop", delay_s=HOUR_S)
        assert (await writer.get_task(task.id)).id == task.id

    async with SchedulerClient(daemon.base_url, READER_TOKEN) as reader:
        assert [t.id for t in (await reader.list_tasks()).items] == [task.id]
        with pytest.raises(Forbidden):
            await reader.cancel_task(task.id)


async def test_unreachable_daemon() -> None:
    async with SchedulerClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(SchedulerUnavailable) as info:
            await client.list_tasks()
        assert info.value.status is None
        assert isinstance(info.value, SchedulerError)
        with pytest.raises(SchedulerUnavailable):
            await client.create_task("noop")
        assert await client.health() is False
        ok, reasons = await client.ready()
        assert ok is False
        assert reasons


async def test_answers_that_are_not_problem_documents(receiver: WebhookReceiver) -> None:
    # The receiver stands in for a proxy in front of the daemon.
    base = receiver.url("/proxy")
    async with SchedulerClient(base) as client:
        receiver.status, receiver.reply = 502, "<html><body>Bad Gateway</body></html>"
        with pytest.raises(ServerError) as info:
            await client.get_task(uuid.uuid4())
        assert info.value.status == 502
        assert info.value.title == "Bad Gateway"
        assert "Bad Gateway" in (info.value.detail or "")
        assert info.value.errors == []
        assert info.value.problem == {}

        receiver.status, receiver.reply = 404, ""
        with pytest.raises(NotFound):
            await client.get_task(uuid.uuid4())

        receiver.status, receiver.reply = 200, "not json"
        with pytest.raises(SchedulerError, match="Unexpected response"):
            await client.list_tasks()

        assert await client.health() is False
        assert (await client.ready())[0] is False

    paths = [r.path for r in receiver.requests]
    assert paths[0].startswith("/proxy/v1/tasks/")
    assert paths[2] == "/proxy/v1/tasks"


async def test_given_session_is_left_open(daemon: DaemonProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with SchedulerClient(daemon.base_url, session=session) as client:
            task = await client.create_task("noop", delay_s=HOUR_S)
        assert not session.closed
        async with SchedulerClient(daemon.base_url, session=session) as client:
            assert (await client.get_task(task.id)).id == task.id
        with pytest.raises(RuntimeError, match="closed"):
            await client.get_task(task.id)
