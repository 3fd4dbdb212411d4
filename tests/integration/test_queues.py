"""Queues against a real PostgreSQL: pause and resume, claims that leave queues out, claims
within a queue's global limit, and the queue listing (store and HTTP)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from scheduler_daemon.domain.models import NewTask
from scheduler_daemon.settings import Settings
from scheduler_daemon.store import queries
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import NOTIFY_CHANNEL, PostgresStore
from scheduler_daemon.store.queues import PostgresQueueStore
from tests.integration.serve import serve_api

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def _task(queue: str, *, priority: int = 0, run_at: datetime | None = None) -> NewTask:
    return NewTask(action="noop", payload={}, queue=queue, priority=priority, run_at=run_at)


async def _add(store: PostgresStore, queue: str, n: int, **kw: object) -> list[uuid.UUID]:
    created = await store.create_tasks([_task(queue, **kw) for _ in range(n)])  # type: ignore[arg-type]
    return [task.id for task, _ in created]


async def test_paused_queue_is_never_claimed_until_resumed(store: PostgresStore) -> None:
    queues = PostgresQueueStore(store.pool)
    held = await _add(store, "mail", 3)
    free = await _add(store, "default", 2)
    assert await queues.pause("mail", "ops") is True
    assert await queues.pause("mail", "ops") is False  # already paused
    assert await store.paused_queues() == frozenset({"mail"})
    # Both claims skip it: the plain one (a daemon that has not heard of the pause yet) and
    # the one that leaves paused queues out by name.
    assert {t.id for t in await store.claim("a", 10, 30.0)} == set(free)
    assert await store.claim("a", 10, 30.0, exclude=["mail"]) == []
    assert await store.claim_queue("a", "mail", 10, 30.0, None) == []
    assert await store.claim_queue("a", "mail", 10, 30.0, 5) == []
    assert await store.next_due_in(["other"]) is None  # mail's tasks are not waited for
    assert await queues.resume("mail") is True
    assert await queues.resume("mail") is False
    assert {t.id for t in await store.claim("a", 10, 30.0)} == set(held)


async def test_excluding_claim_shares_the_limit_among_allowed_queues(
    store: PostgresStore,
) -> None:
    early = await _add(store, "a", 2, run_at=PAST)
    late = await _add(store, "a", 4, run_at=PAST + timedelta(seconds=5))
    high = await _add(store, "b", 1, priority=5, run_at=PAST + timedelta(seconds=1))
    left_out = await _add(store, "c", 50, priority=9, run_at=PAST)
    await _add(store, "d", 5, run_at=datetime.now(UTC) + timedelta(hours=1))  # not due
    claimed = await store.claim("w", 4, 30.0, exclude=["c"])
    ids = [t.id for t in claimed]
    # "a" and "b" get two each at first; "b" has only one, so "a" fills the rest, in its own
    # claim order (run_at).
    assert len(ids) == 4
    assert set(high) <= set(ids)
    assert set(early) <= set(ids)
    assert len(set(ids) & set(late)) == 1
    assert not set(ids) & set(left_out)
    rest = await store.claim("w", 100, 30.0, exclude=["c"])
    assert len(rest) == 3  # the rest of "a"; "d" is not due, "c" is left out
    assert len(await store.claim("w", 100, 30.0)) == 50


async def test_next_due_in_leaves_out_excluded_and_paused_queues(store: PostgresStore) -> None:
    queues = PostgresQueueStore(store.pool)
    await _add(store, "busy", 1, run_at=PAST)
    await _add(store, "later", 1, run_at=datetime.now(UTC) + timedelta(minutes=10))
    assert (await store.next_due_in()) is not None
    assert (await store.next_due_in()) < 0  # type: ignore[operator]
    waits = await store.next_due_in(["busy"])
    assert waits is not None
    assert 500 < waits <= 600
    await queues.pause("later", "ops")
    assert await store.next_due_in(["busy"]) is None


async def test_global_limit_counts_running_tasks_of_every_daemon(store: PostgresStore) -> None:
    await _add(store, "api", 10)
    first = await store.claim_queue("daemon-1", "api", 2, 30.0, 3)
    second = await store.claim_queue("daemon-2", "api", 5, 30.0, 3)
    assert (len(first), len(second)) == (2, 1)
    assert await store.claim_queue("daemon-2", "api", 5, 30.0, 3) == []
    # Without the global limit the per-call limit is all there is.
    assert len(await store.claim_queue("daemon-3", "api", 2, 30.0, None)) == 2


async def test_expired_lease_frees_its_global_slot(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    await _add(store, "api", 5)
    dead = await store.claim_queue("gone", "api", 2, 30.0, 2)
    assert len(dead) == 2
    assert await store.claim_queue("alive", "api", 2, 30.0, 2) == []
    # The first daemon died: its leases ran out. Until the rescuer moves its tasks back they
    # are still 'running', but they hold no slot of the limit.
    await pool.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE lease_owner = 'gone'"
    )
    assert len(await store.claim_queue("alive", "api", 2, 30.0, 2)) == 2
    rescued = await store.rescue_expired(10)
    assert {r.task_id for r in rescued} == {t.id for t in dead}
    # Rescued and due again, they wait for the limit like any other task.
    assert await store.claim_queue("alive", "api", 5, 30.0, 2) == []


async def test_global_limit_holds_under_concurrent_claims(store: PostgresStore) -> None:
    await _add(store, "api", 200)

    async def claimer(n: int) -> int:
        total = 0
        for _ in range(5):
            total += len(await store.claim_queue(f"d{n}", "api", 3, 30.0, 7))
        return total

    counts = await asyncio.gather(*(claimer(n) for n in range(8)))
    assert sum(counts) == 7
    running = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE queue = 'api' AND status = 'running'"
    )
    assert running == 7


async def test_pause_and_resume_notify_every_daemon(
    store: PostgresStore, database_url: str
) -> None:
    queues = PostgresQueueStore(store.pool)
    conn = await asyncpg.connect(database_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener(NOTIFY_CHANNEL, lambda *args: got.put_nowait(str(args[3])))
    try:
        await queues.pause("mail", "ops")
        assert await asyncio.wait_for(got.get(), 10) == "queues"
        await queues.resume("mail")
        assert await asyncio.wait_for(got.get(), 10) == "queues"
    finally:
        await conn.close()


async def test_queue_listing_counts(store: PostgresStore, pool: asyncpg.Pool) -> None:
    queues = PostgresQueueStore(store.pool)
    await _add(store, "mail", 3, run_at=datetime.now(UTC) - timedelta(seconds=90))
    await _add(store, "mail", 2, run_at=datetime.now(UTC) + timedelta(hours=1))
    await _add(store, "reports", 2)
    await store.claim_queue("d", "reports", 1, 30.0, None)
    await queues.pause("idle", "ops")
    listed = {q.name: q for q in await queues.list_queues(["default", "configured"])}
    assert sorted(listed) == ["configured", "default", "idle", "mail", "reports"]
    mail = listed["mail"]
    assert (mail.depth, mail.due, mail.running, mail.paused_at) == (5, 3, 0, None)
    assert mail.oldest_due_age_s is not None
    assert 85 <= mail.oldest_due_age_s < 600
    reports = listed["reports"]
    assert (reports.depth, reports.due, reports.running) == (1, 1, 1)
    idle = listed["idle"]
    assert (idle.depth, idle.running, idle.paused_by) == (0, 0, "ops")
    assert idle.paused_at is not None
    empty = listed["configured"]
    assert (empty.depth, empty.due, empty.running, empty.oldest_due_age_s) == (0, 0, 0, None)
    one = await queues.get_queue("mail")
    assert (one.name, one.depth, one.due, one.running) == ("mail", 5, 3, 0)
    assert (await queues.get_queue("never-used")).depth == 0


async def test_wakeups_of_paused_and_limited_queues(store: PostgresStore) -> None:
    outbox = PostgresOutboxStore(store.pool)
    queues = PostgresQueueStore(store.pool)
    (paused_id,) = await _add(store, "held", 1)
    limited = await _add(store, "api", 3)
    (free_id,) = await _add(store, "default", 1)
    await queues.pause("held", "ops")
    wakeups = [(i, 1) for i in [paused_id, *limited, free_id]]
    claimed = await outbox.claim_messages("d", wakeups, 30.0, exclude=["api"])
    assert [t.id for t in claimed] == [free_id]
    states = await outbox.message_tasks([paused_id, limited[0]])
    assert (states[paused_id].queue, states[paused_id].paused) == ("held", True)
    assert (states[limited[0]].queue, states[limited[0]].paused) == ("api", False)
    got = await outbox.claim_queue_messages("d", "api", [(i, 1) for i in limited], 3, 30.0, 2)
    assert len(got) == 2
    assert {t.id for t in got} <= set(limited)
    before = await store.pool.fetchval("SELECT published_at FROM tasks WHERE id = $1", paused_id)
    await outbox.deferred([paused_id])
    after = await store.pool.fetchval("SELECT published_at FROM tasks WHERE id = $1", paused_id)
    assert after is not None
    assert before is None or after > before
    series = await store.pool.fetchval("SELECT wake_version FROM tasks WHERE id = $1", paused_id)
    assert series == 1  # touching published_at is not a new scheduling


async def test_queue_api(store: PostgresStore) -> None:
    await _add(store, "mail", 2)
    settings = Settings(queues={"mail": {"concurrency": 2, "rate_per_s": 5.0}})
    async with serve_api(store, settings) as http:
        async with http.get("/v1/queues") as resp:
            assert resp.status == 200
            body = await resp.json()
        by_name = {q["name"]: q for q in body["queues"]}
        assert set(by_name) == {"default", "mail"}
        assert by_name["mail"]["limits"] == {
            "concurrency": 2,
            "global_concurrency": None,
            "rate_per_s": 5.0,
            "burst": None,
        }
        assert (by_name["mail"]["depth"], by_name["mail"]["paused"]) == (2, False)
        async with http.post("/v1/queues/mail/pause") as resp:
            assert resp.status == 200
            paused = await resp.json()
        assert paused["paused"] is True
        assert paused["paused_by"] == "anonymous"
        assert paused["paused_at"] is not None
        assert await store.claim("d", 10, 30.0) == []
        async with http.post("/v1/queues/mail/resume") as resp:
            assert (await resp.json())["paused"] is False
        async with http.get("/v1/queues/mail") as resp:
            assert (await resp.json())["paused"] is False
        async with http.post("/v1/queues/bad%20name/pause") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"
            assert "bad name" in (await resp.json())["detail"]
    assert len(await store.claim("d", 10, 30.0)) == 2


async def test_queue_depth_is_counted_from_the_queue_index_not_the_rows(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    # A backlog of future tasks beside a history of finished ones. The depth, due count and
    # oldest due age come from the queue's claim index alone (an index-only scan); the rows
    # themselves are read only for due tasks (which actions lack a worker). Reading the
    # backlog's rows, as the statement once did, took 3.4 s for a million future tasks, on
    # every GET /v1/queues and every pause or resume.
    await store.create_tasks([_task("default", run_at=datetime.now(UTC) + timedelta(days=9))
                              for _ in range(3000)])  # fmt: skip
    await pool.execute(
        "INSERT INTO tasks (id, action, status, finished_at) "
        "SELECT gen_random_uuid(), 'noop', 'completed', now() FROM generate_series(1, 9000)"
    )
    await pool.execute("VACUUM ANALYZE tasks")
    rows = await pool.fetch("EXPLAIN " + queries.QUEUE_STATS, ["default"], "default", 30.0)
    text = "\n".join(r[0] for r in rows)
    assert "Index Only Scan using tasks_queue_claim_idx" in text, text
    assert "Seq Scan on tasks" not in text, text
    state = await PostgresQueueStore(pool).get_queue("default")
    assert (state.depth, state.due) == (3000, 0)
