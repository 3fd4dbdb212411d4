"""The lease keeper against a real PostgreSQL: it renews leases from its own thread while the
event loop is blocked, aborts lost leases on the loop, reconnects, and stops; the loop-block
detector on its thread names the task that holds the loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import ClaimedTask, NewTask
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.lease_keeper import LeaseKeeper
from scheduler_daemon.engine.watchdog import LoopBlockDetector, attempt_task_name
from scheduler_daemon.settings import WatchdogSettings
from scheduler_daemon.store.keeper import APPLICATION_NAME, KeeperConnection
from scheduler_daemon.store.postgres import PostgresStore
from tests.fakes import claimed_task
from tests.integration.serve import eventually

OWNER = "host/1/keeper"
LEASE_S = 2.0
INTERVAL_S = 0.2
GUARD_S = 20.0


class Rounds:
    """The keeper's progress reports (made on the loop), as an awaitable count."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def report(self) -> None:
        self.count += 1
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(GUARD_S):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def inflight() -> InFlight:
    return InFlight(10, SystemClock())


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def claimed(store: PostgresStore, inflight: InFlight, n: int) -> list[ClaimedTask]:
    """``n`` tasks claimed by OWNER with a LEASE_S lease, held in ``inflight``."""
    await store.create_tasks([NewTask(action="noop", payload={}) for _ in range(n)])
    tasks = await store.claim(OWNER, n, LEASE_S)
    assert len(tasks) == n
    for task in tasks:
        inflight.admit([task])
    return tasks


@contextlib.asynccontextmanager
async def keeping(
    database_url: str, inflight: InFlight, **kwargs: Any
) -> AsyncIterator[tuple[LeaseKeeper, Rounds]]:
    keeper = LeaseKeeper(
        database_url,
        inflight,
        OWNER,
        SystemClock(),
        lease_s=lambda: LEASE_S,
        interval_s=lambda: INTERVAL_S,
        **kwargs,
    )
    rounds = Rounds()
    keeper.report_progress = rounds.report
    keeper.start()
    try:
        yield keeper, rounds
    finally:
        await keeper.stop()


async def live_leases(store: PostgresStore) -> int:
    count = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE lease_owner = $1 AND lease_expires_at > now()", OWNER
    )
    return int(count)


async def test_leases_are_renewed_while_the_event_loop_is_blocked(
    store: PostgresStore, inflight: InFlight, database_url: str
) -> None:
    await claimed(store, inflight, 3)
    async with keeping(database_url, inflight) as (keeper, rounds):
        await rounds.wait_for(1)
        time.sleep(2.5 * LEASE_S)  # noqa: ASYNC251 - a handler holding the loop past the lease
        # Every lease is still this daemon's: nothing for a rescuer to take.
        assert await live_leases(store) == 3
        assert await store.rescue_expired(100) == []
        assert keeper.problems() == []


async def test_a_lost_lease_is_aborted_on_the_event_loop(
    store: PostgresStore, inflight: InFlight, database_url: str
) -> None:
    # In debug mode, cancelling an asyncio task from another thread raises: the abort has to
    # come through the loop for the attempt below to be cancelled at all.
    asyncio.get_running_loop().set_debug(True)
    stolen, kept = await claimed(store, inflight, 2)
    running = {t.id: asyncio.create_task(asyncio.Event().wait()) for t in (stolen, kept)}
    held = {t.id: inflight.attach(t.id, running[t.id]) for t in (stolen, kept)}
    await store.pool.execute("UPDATE tasks SET lease_owner = 'elsewhere' WHERE id = $1", stolen.id)

    async with keeping(database_url, inflight):
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(GUARD_S):
                await running[stolen.id]

    assert stolen.id not in inflight
    stolen_held = held[stolen.id]
    assert stolen_held is not None
    assert stolen_held.lost
    assert kept.id in inflight
    assert not running[kept.id].done()
    running[kept.id].cancel()


async def test_the_keeper_reconnects_when_its_connection_is_lost(
    store: PostgresStore, inflight: InFlight, database_url: str
) -> None:
    await claimed(store, inflight, 1)
    async with keeping(database_url, inflight) as (keeper, rounds):
        await rounds.wait_for(1)
        assert keeper.connections_opened == 1
        terminated = await store.pool.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1) AS t",
            APPLICATION_NAME,
        )
        assert terminated == 1
        async with asyncio.timeout(GUARD_S):
            while keeper.connections_opened < 2:
                await rounds.wait_for(rounds.count + 1)
        await rounds.wait_for(rounds.count + 1)  # a round on the new connection
        assert keeper.failing_since is None
        assert keeper.alive
        assert await live_leases(store) == 1


async def test_an_unreachable_database_is_a_problem_not_the_end_of_the_thread(
    inflight: InFlight, logs: list[MutableMapping[str, Any]]
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inflight.admit([claimed_task()])
    async with keeping(f"postgresql://postgres@127.0.0.1:{port}/none", inflight) as (keeper, _):
        # /readyz polls problems(); so does this test (a failed round sends no event).
        async with asyncio.timeout(GUARD_S):
            while not keeper.problems():  # noqa: ASYNC110
                await asyncio.sleep(INTERVAL_S)
        [problem] = keeper.problems()
        assert problem.startswith("lease keeper cannot renew leases: "), problem
        assert keeper.alive
    assert not keeper.alive
    failures = [e for e in logs if e["event"] == "lease_renewal_failed"]
    assert len(failures) >= 2, failures  # retried, not given up
    assert all(f["held"] == 1 for f in failures), failures


async def test_stop_ends_the_thread_for_good(inflight: InFlight, database_url: str) -> None:
    def make() -> LeaseKeeper:
        return LeaseKeeper(
            database_url, inflight, OWNER, SystemClock(), lambda: LEASE_S, lambda: INTERVAL_S
        )

    keeper = make()
    keeper.start()
    assert keeper.alive
    await keeper.stop()
    assert not keeper.alive
    await keeper.stop()  # again: nothing to do
    keeper.start()  # a stopped keeper stays stopped
    assert not keeper.alive
    assert keeper.problems() == []

    never_started = make()
    await never_started.stop()
    never_started.start()
    assert not never_started.alive


async def test_a_blocked_loop_is_reported_naming_each_attempt_that_holds_it(
    inflight: InFlight, database_url: str, logs: list[MutableMapping[str, Any]]
) -> None:
    settings = WatchdogSettings(interval_s=0.05, max_loop_lag_s=0.2)
    detector = LoopBlockDetector(asyncio.get_running_loop(), lambda: settings, SystemClock())
    first, second = uuid.uuid4(), uuid.uuid4()

    async def blocking_attempt() -> None:
        time.sleep(1.0)  # noqa: ASYNC251 - what the detector is there to notice

    async with keeping(database_url, inflight, also_run=[detector.run]):
        # Both ready at once: they hold the loop one after the other, in one block.
        attempts = [
            asyncio.create_task(blocking_attempt(), name=attempt_task_name(first, 2, "a.build")),
            asyncio.create_task(blocking_attempt(), name=attempt_task_name(second, 1, "b.send")),
        ]
        await asyncio.gather(*attempts)
        # The probe posted during the block ran before this line; stopping the keeper (which
        # comes after it on the keeper's loop) lets the detector log the unblock first.

    blocked = [e for e in logs if e["event"] == "event_loop_blocked"]
    [unblocked] = [e for e in logs if e["event"] == "event_loop_unblocked"]
    assert [(e["task_id"], e["attempt"], e["action"]) for e in blocked] == [
        (str(first), 2, "a.build"),
        (str(second), 1, "b.send"),
    ]
    assert all(e["log_level"] == "error" for e in blocked)
    assert blocked[0]["running"] == attempts[0].get_name()
    assert unblocked["task_id"] == str(second)
    assert unblocked["blocked_s"] >= settings.max_loop_lag_s


async def test_presence_and_renewals_share_the_keeper_connection_one_at_a_time(
    store: PostgresStore, database_url: str
) -> None:
    # Presence registers on the keeper's connection while a renewal is in flight on it (here
    # held up by a row lock of another session): asyncpg refuses a second operation on a busy
    # connection, so the statements must take turns, and a first use by both opens one
    # connection, not two.
    import asyncpg

    await store.create_task(NewTask(action="log", payload={}))
    [claimed] = await store.claim(OWNER, 1, 30.0)
    connection = KeeperConnection(database_url, lambda: 10.0)
    await asyncio.gather(connection.open(), connection.register(OWNER, ["log"]))
    assert connection.opened == 1
    blocker = await asyncpg.connect(database_url)
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", claimed.id)
        renewal = asyncio.create_task(
            connection.renew_leases(OWNER, [(claimed.id, claimed.attempt)], 30.0)
        )

        async def renewal_waits() -> bool:  # on the row lock
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
            )

        await eventually(renewal_waits, timeout=GUARD_S, interval=0.01)
        register = asyncio.create_task(connection.register(OWNER, ["log"]))
        await asyncio.sleep(0)
        assert not register.done()
        await locked.rollback()
        assert await renewal == {(claimed.id, claimed.attempt)}
        await register
        assert await blocker.fetchval("SELECT count(*) FROM workers WHERE owner = $1", OWNER) == 1
    finally:
        await blocker.close()
        await connection.close()
