"""Recurring schedules against the real daemon process: a seconds cron delivering webhooks,
pause, every schedule method of the Python client with its errors, and a task's recurrence
catching up a missed occurrence."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler_daemon.client import (
    Conflict,
    Forbidden,
    NotFound,
    Schedule,
    SchedulePage,
    SchedulePreview,
    SchedulerClient,
    ScheduleSpec,
    Task,
    TaskPage,
    TaskSpec,
    ValidationFailed,
)
from tests.e2e.conftest import (
    POLL_INTERVAL_S,
    Api,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    free_port,
)

pytestmark = pytest.mark.e2e

# Occurrences become tasks 2 s ahead: a pause takes back what was made ahead within 2 s.
EXPANDER_ENV = {"SCHEDULER_EXPANDER__HORIZON_S": "2"}
PENDING = frozenset({"waiting", "scheduled", "running"})
ADMIN_TOKEN = "a-0123456789abcdef"
WRITER_TOKEN = "w-0123456789abcdef"
READER_TOKEN = "r-0123456789abcdef"
TOKENS_ENV = {
    **EXPANDER_ENV,
    "SCHEDULER_HTTP__TOKENS": (
        f'[{{"name":"admin","token":"{ADMIN_TOKEN}","role":"admin"}},'
        f'{{"name":"writer","token":"{WRITER_TOKEN}","role":"write"}},'
        f'{{"name":"reader","token":"{READER_TOKEN}","role":"read"}}]'
    ),
}
OSLO = ZoneInfo("Europe/Oslo")
NEWSLETTER = {"action": "log", "payload": {"message": "weekly newsletter"}}


@pytest.fixture
async def daemon(start_daemon: StartDaemon) -> DaemonProcess:
    return await start_daemon(EXPANDER_ENV)


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[SchedulerClient]:
    async with SchedulerClient(daemon.base_url, timeout=10) as c:
        yield c


async def all_schedule_tasks(client: SchedulerClient, schedule_id: uuid.UUID) -> list[Task]:
    tasks: list[Task] = []
    cursor: str | None = None
    while True:
        page = await client.schedule_tasks(schedule_id, limit=100, cursor=cursor)
        tasks.extend(page.items)
        if page.next_cursor is None:
            return tasks
        cursor = page.next_cursor


async def poll_until(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float = 20.0
) -> None:
    """Await ``check()`` every 50 ms until it is True (the API has no push notification)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await check():
                    return
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"not {what} within {timeout}s") from None


# -- (a) a cron schedule with seconds, delivered, then paused --------------------------------


async def test_seconds_cron_delivers_webhooks_until_paused(
    client: SchedulerClient, receiver: WebhookReceiver
) -> None:
    schedule = await client.create_schedule(
        "every-2s",
        cron="*/2 * * * * *",
        task={"action": "webhook", "payload": {"url": receiver.url(), "json": {"tick": True}}},
    )
    assert schedule.cron == "*/2 * * * * *"
    assert schedule.paused is False
    assert schedule.next_run_at is not None

    # Occurrences every 2 s, each delivered once: at least 3 requests, about 2 s apart.
    try:
        delivered = await receiver.wait_for_requests(3, timeout=20)
    except AssertionError as exc:
        now = await client.get_schedule(schedule.id)
        made = [(t.scheduled_for, t.status) for t in await all_schedule_tasks(client, schedule.id)]
        raise AssertionError(f"{exc}; next_run_at {now.next_run_at}, tasks {made}") from None
    times = sorted(r.received_at for r in delivered)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.5 for gap in gaps), gaps
    assert all(r.path == "/hook" and r.json() == {"tick": True} for r in delivered)

    paused = await client.pause_schedule(schedule.id)
    assert paused.paused is True
    assert (await client.get_schedule(schedule.id)).paused is True

    # Occurrences already due when the pause came may still finish; then nothing is pending.
    async def settled() -> bool:
        tasks = await all_schedule_tasks(client, schedule.id)
        return not any(t.status in PENDING for t in tasks)

    await poll_until("settled after the pause", settled)
    n = len(receiver.requests)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(receiver.wait_for_requests(n + 1), 4)
    assert len(receiver.requests) == n

    tasks = await all_schedule_tasks(client, schedule.id)
    assert {t.status for t in tasks} <= {"completed", "cancelled"}, [t.status for t in tasks]
    assert sum(t.status == "completed" for t in tasks) == n  # one request per occurrence
    assert all(t.schedule_id == schedule.id and t.scheduled_for is not None for t in tasks)
    assert len({t.scheduled_for for t in tasks}) == len(tasks)


# -- (b) every schedule method of the client, and its errors --------------------------------


async def test_schedule_round_trip(client: SchedulerClient) -> None:
    start_at = datetime.now(UTC) + timedelta(days=1)
    created = await client.create_schedule(
        "newsletter",
        task=NEWSLETTER,
        preset="weekly",
        weekday=0,
        at=time(9, 0),
        timezone="Europe/Oslo",
        start_at=start_at,
        exclusions={"dates": [date(2099, 1, 5)], "daily": [{"start": "01:00", "end": "03:00"}]},
        misfire_policy="skip",
        max_catchup=5,
        overlap_policy="skip",
        jitter_s=1.5,
        metadata={"team": "growth"},
    )
    assert isinstance(created, Schedule)
    assert isinstance(created.id, uuid.UUID)
    assert (created.name, created.preset, created.weekday, created.at) == (
        "newsletter",
        "weekly",
        0,
        time(9, 0),
    )
    assert created.cron is None
    assert created.timezone == "Europe/Oslo"
    assert created.task.action == "log"
    assert created.task.payload == {"message": "weekly newsletter"}
    assert created.exclusions.dates == [date(2099, 1, 5)]
    assert created.exclusions.daily[0].start == time(1, 0)
    assert (created.misfire_policy, created.overlap_policy) == ("skip", "skip")
    assert (created.max_catchup, created.jitter_s) == (5, 1.5)
    assert created.metadata == {"team": "growth"}
    assert created.start_at == start_at
    assert created.next_run_at is not None
    local = created.next_run_at.astimezone(OSLO)
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)

    assert await client.get_schedule(created.id) == created
    assert await client.get_schedule(str(created.id)) == created
    assert await client.get_schedule(created) == created

    other = await client.create_schedule(
        "nightly-report",
        task=TaskSpec("noop", queue="reports", priority=3),
        cron="30 2 * * *",
        timezone="America/New_York",
        paused=True,
    )
    assert other.paused is True
    assert (other.task.queue, other.task.priority) == ("reports", 3)

    page = await client.list_schedules()
    assert isinstance(page, SchedulePage)
    assert [s.id for s in page.items] == [other.id, created.id]
    assert page.next_cursor is None
    assert [s.id for s in (await client.list_schedules(paused=True)).items] == [other.id]
    assert [s.id for s in (await client.list_schedules(paused=False)).items] == [created.id]
    assert [s.id for s in (await client.list_schedules(name="news")).items] == [created.id]
    first = await client.list_schedules(limit=1)
    assert [s.id for s in first.items] == [other.id]
    assert first.next_cursor is not None
    rest = await client.list_schedules(limit=1, cursor=first.next_cursor)
    assert [s.id for s in rest.items] == [created.id]
    assert [s.id async for s in client.iter_schedules(limit=1)] == [other.id, created.id]
    assert [s.id async for s in client.iter_schedules(paused=True)] == [other.id]

    preview = await client.preview_schedule(created.id, count=3)
    assert isinstance(preview, SchedulePreview)
    assert preview.timezone == "Europe/Oslo"
    assert len(preview.occurrences) == 3
    assert preview.occurrences[0].utc == created.next_run_at
    for occurrence in preview.occurrences:
        assert occurrence.local == occurrence.utc
        assert (occurrence.local.weekday(), occurrence.local.hour) == (0, 9)
    assert len((await client.preview_schedule(created.id)).occurrences) == 5

    # Preview a body without saving it: even under a name that is taken.
    draft = await client.preview_schedule_body(
        "newsletter",
        task={"action": "noop"},
        interval_s=90,
        start_at=datetime(2030, 1, 1, tzinfo=UTC),
        count=4,
    )
    assert [o.utc for o in draft.occurrences] == [
        datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=90 * i) for i in range(4)
    ]
    assert draft.timezone == "UTC"
    assert len((await client.list_schedules()).items) == 2

    # PATCH sends only what is given; a new rule replaces the old one whole.
    updated = await client.update_schedule(
        created.id, name="digest", cron="0 12 * * *", metadata={"team": "news"}
    )
    assert updated.id == created.id
    assert (updated.name, updated.cron) == ("digest", "0 12 * * *")
    assert (updated.preset, updated.weekday, updated.at) == (None, None, None)
    assert updated.timezone == "Europe/Oslo"  # kept
    assert updated.metadata == {"team": "news"}
    assert updated.task == created.task  # kept
    assert updated.next_run_at is not None
    assert updated.next_run_at.astimezone(OSLO).hour == 12
    cleared = await client.update_schedule(created, start_at=None, jitter_s=0)
    assert (cleared.start_at, cleared.jitter_s, cleared.name) == (None, 0.0, "digest")
    assert (await client.get_schedule(created.id)).name == "digest"

    assert (await client.pause_schedule(created.id)).paused is True
    assert [s.id for s in (await client.list_schedules(paused=True)).items] == [
        other.id,
        created.id,
    ]
    resumed = await client.resume_schedule(str(created.id))
    assert resumed.paused is False

    tasks = await client.schedule_tasks(created.id)
    assert isinstance(tasks, TaskPage)
    assert tasks.items == []
    assert tasks.next_cursor is None

    await client.delete_schedule(created.id)
    with pytest.raises(NotFound):
        await client.get_schedule(created.id)
    with pytest.raises(NotFound):
        await client.delete_schedule(created.id)
    assert [s.id for s in (await client.list_schedules()).items] == [other.id]


async def test_schedule_errors(client: SchedulerClient) -> None:
    noop = {"action": "noop"}
    schedule = await client.create_schedule("taken", task=noop, interval_s=3600)
    with pytest.raises(Conflict) as conflict:
        await client.create_schedule("taken", task=noop, interval_s=60)
    assert conflict.value.status == 409
    assert conflict.value.fields == ["name"]

    with pytest.raises(ValidationFailed) as invalid:
        await client.create_schedule("bad-cron", task=noop, cron="61 * * * *")
    assert invalid.value.status == 422
    assert "cron" in invalid.value.fields
    with pytest.raises(ValidationFailed) as invalid:
        await client.preview_schedule_body("bad-cron", task=noop, cron="every tuesday")
    assert "cron" in invalid.value.fields
    with pytest.raises(ValidationFailed) as invalid:
        await client.create_schedule("bad-zone", task=noop, cron="0 * * * *", timezone="Mars/Base")
    assert "timezone" in invalid.value.fields
    with pytest.raises(ValidationFailed) as invalid:
        await client.create_schedule(
            "bad-task", task={"action": "no-such-action"}, cron="* * * * *"
        )
    assert any(f.startswith("task.action") for f in invalid.value.fields), invalid.value.errors
    with pytest.raises(ValidationFailed) as invalid:
        await client.preview_schedule_body("n", task=noop, cron="* * * * *", count=0)
    assert invalid.value.fields == ["count"]
    with pytest.raises(ValidationFailed) as invalid:
        await client.list_schedules(limit=0)
    assert invalid.value.fields == ["limit"]
    with pytest.raises(ValidationFailed) as invalid:
        await client.list_schedules(cursor="not-a-cursor")
    assert invalid.value.fields == ["cursor"]

    with pytest.raises(ValidationFailed) as invalid:
        await client.update_schedule(schedule.id, timezone="Nope/Zone")
    assert "timezone" in invalid.value.fields
    with pytest.raises(ValidationFailed) as invalid:
        await client.update_schedule(schedule.id, cron="not a cron")
    assert "cron" in invalid.value.fields
    # Unchanged (but for next_run_at, which the expander moves on its own).
    after = await client.get_schedule(schedule.id)
    assert after.model_dump(exclude={"next_run_at"}) == schedule.model_dump(exclude={"next_run_at"})
    await client.create_schedule("second", task=noop, interval_s=3600)
    with pytest.raises(Conflict):
        await client.update_schedule(schedule.id, name="second")

    missing = uuid.uuid4()
    with pytest.raises(NotFound) as not_found:
        await client.get_schedule(missing)
    assert not_found.value.status == 404
    assert str(missing) in (not_found.value.detail or "")
    for call in (
        client.get_schedule,
        client.delete_schedule,
        client.pause_schedule,
        client.resume_schedule,
        client.preview_schedule,
        client.schedule_tasks,
    ):
        with pytest.raises(NotFound):
            await call(missing)
    with pytest.raises(NotFound):
        await client.update_schedule(missing, name="ghost")
    with pytest.raises(NotFound):
        await client.get_schedule("not-a-uuid")


async def test_client_side_errors_are_raised_before_sending() -> None:
    # Nothing listens there: a ValueError or TypeError proves no request was attempted.
    async with SchedulerClient(f"http://127.0.0.1:{free_port()}") as client:
        naive = datetime(2030, 1, 1, 12, 0)  # noqa: DTZ001 - the point of the test
        noop = {"action": "noop"}
        with pytest.raises(ValueError, match="start_at"):
            await client.create_schedule("n", task=noop, cron="* * * * *", start_at=naive)
        with pytest.raises(ValueError, match="end_at"):
            await client.preview_schedule_body("n", task=noop, cron="* * * * *", end_at=naive)
        with pytest.raises(ValueError, match=r"exclusions\.windows\[0\]\.start"):
            await client.create_schedule(
                "n",
                task=noop,
                cron="* * * * *",
                exclusions={"windows": [{"start": naive, "end": naive}]},
            )
        with pytest.raises(ValueError, match="end_at"):
            await client.update_schedule(uuid.uuid4(), end_at=naive)
        with pytest.raises(ValueError, match="at"):
            await client.create_schedule("n", task=noop, preset="daily", at=time(9, 0, tzinfo=UTC))
        with pytest.raises(TypeError, match="colour"):
            await client.update_schedule(uuid.uuid4(), colour="blue")
        with pytest.raises(ValueError, match="schedule id"):
            await client.get_schedule("")
    assert ScheduleSpec("n", noop, cron="* * * * *", at="09:30").to_body() == {
        "name": "n",
        "task": {"action": "noop"},
        "cron": "* * * * *",
        "at": "09:30",
    }


async def test_schedule_mutations_need_admin(start_daemon: StartDaemon) -> None:
    daemon = await start_daemon(TOKENS_ENV)
    noop = {"action": "noop"}
    async with SchedulerClient(daemon.base_url, WRITER_TOKEN) as writer:
        with pytest.raises(Forbidden) as forbidden:
            await writer.create_schedule("hourly", task=noop, preset="hourly")
        assert forbidden.value.status == 403
        assert "writer" in (forbidden.value.detail or "")
        assert (await writer.list_schedules()).items == []  # reads need read

    async with SchedulerClient(daemon.base_url, ADMIN_TOKEN) as admin:
        schedule = await admin.create_schedule("hourly", task=noop, preset="hourly")

    async with SchedulerClient(daemon.base_url, READER_TOKEN) as reader:
        assert (await reader.get_schedule(schedule.id)).id == schedule.id
        assert [s.id for s in (await reader.list_schedules()).items] == [schedule.id]
        assert len((await reader.preview_schedule(schedule.id, count=2)).occurrences) == 2
        assert (await reader.schedule_tasks(schedule.id)).items == []
        with pytest.raises(Forbidden):
            await reader.pause_schedule(schedule.id)

    async with SchedulerClient(daemon.base_url, WRITER_TOKEN) as writer:
        for call in (writer.pause_schedule, writer.resume_schedule, writer.delete_schedule):
            with pytest.raises(Forbidden):
                await call(schedule.id)
        with pytest.raises(Forbidden):
            await writer.update_schedule(schedule.id, name="renamed")
        assert (await writer.get_schedule(schedule.id)).name == "hourly"


# -- (c) a task's recurrence catches up ------------------------------------------------------


async def test_task_recurrence_catches_up(
    daemon: DaemonProcess, client: SchedulerClient, api_for: Callable[[DaemonProcess], Api]
) -> None:
    run_at = (datetime.now(UTC) - timedelta(days=2, seconds=5)).replace(microsecond=0)
    created = await client.create_task("noop", run_at=run_at, recurrence="daily")
    first = await client.get_task(created.id)
    assert first.schedule_id is not None
    assert first.run_at == run_at

    async def caught_up() -> bool:
        page = await client.list_tasks(schedule_id=first.schedule_id)
        return len(page.items) >= 2

    await poll_until("caught up", caught_up)
    tasks = [t async for t in client.iter_tasks(schedule_id=first.schedule_id)]
    assert first.id in {t.id for t in tasks}
    later = sorted((t for t in tasks if t.id != first.id), key=lambda t: t.scheduled_for or run_at)
    assert later, tasks
    assert later[0].parent_task_id == first.id
    assert later[0].scheduled_for is not None
    assert later[0].scheduled_for > run_at
    assert later[0].run_at <= datetime.now(UTC)  # due at once: a catch-up
    # Each later occurrence points at the one before it.
    for before, after in itertools.pairwise(later):
        assert after.parent_task_id == before.id
    # Made by a task, the schedule is not listed with the user's schedules.
    assert (await client.list_schedules()).items == []
