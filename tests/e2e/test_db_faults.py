"""Database faults under load, on real daemon processes: every backend of the daemons terminated
(``pg_terminate_backend``) while webhooks flow; nothing runs twice, nothing is lost."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import FAST_RETRIES, StartDaemon, WebhookReceiver, logged, webhook
from tests.e2e.test_operations import create_batch
from tests.integration.serve import eventually

pytestmark = pytest.mark.e2e

TOTAL = 2000
# Short leases and timeouts: a completion dropped by a crashed completer would make its task
# overdue (timeout + lease) and run again on the other daemon within seconds, not minutes.
FAULT_ENV = {
    **FAST_RETRIES,
    "SCHEDULER_EXECUTOR__LEASE_S": "3",
    "SCHEDULER_EXECUTOR__CONCURRENCY": "32",
    "SCHEDULER_DISCOVERY__POLL_INTERVAL_S": "0.5",
}


@pytest.mark.timeout(180)
async def test_terminated_backends_under_load_run_every_webhook_once(
    start_daemon: StartDaemon,
    http: aiohttp.ClientSession,
    database_url: str,
    receiver: WebhookReceiver,
) -> None:
    a = await start_daemon(FAULT_ENV, name="a")
    b = await start_daemon(FAULT_ENV, name="b")
    start = datetime.now(UTC)
    ids: list[str] = []
    for first in range(0, TOTAL, 500):
        ids += await create_batch(
            http,
            a,
            [
                webhook(
                    receiver,
                    {"n": n},
                    timeout_s=5,
                    run_at=(start + timedelta(milliseconds=2 * n)).isoformat(),
                )
                for n in range(first, first + 500)
            ],
        )
    admin = await asyncpg.connect(database_url)
    name = await admin.fetchval("SELECT current_database()")
    try:
        for round_, threshold in enumerate((TOTAL // 5, TOTAL // 3, TOTAL // 2), start=1):

            async def reached(threshold: int = threshold) -> bool:
                return len(receiver.requests) >= threshold

            await eventually(reached, timeout=60)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND application_name LIKE 'scheduler-daemon%'",
                name,
            )
            assert killed >= 4  # both daemons' pools and LISTEN connections at least
            for daemon in (a, b):
                await eventually(logged(daemon, "listener_reconnected", round_), timeout=30)

        async def all_done() -> bool:
            done = await admin.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
            return int(done) == TOTAL

        await eventually(all_done, timeout=120)
        runs = collections.Counter(r.json()["n"] for r in receiver.requests)
        twice = sorted(n for n, c in runs.items() if c > 1)
        assert twice == [], f"{len(twice)} webhooks ran more than once: {twice[:10]}"
        assert set(runs) == set(range(TOTAL))
        succeeded = await admin.fetchval(
            "SELECT count(*) FROM task_attempts WHERE outcome = 'succeeded'"
        )
        assert succeeded == TOTAL
    finally:
        await admin.close()
    for daemon in (a, b):
        async with http.get(f"{daemon.base_url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
