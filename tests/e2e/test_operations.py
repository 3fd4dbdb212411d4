"""Operations against the real daemon process: SIGHUP reloads under load, a paused daemon
fenced out (SIGSTOP past its lease), and every database connection terminated mid-run."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import (
    FAST_RETRIES,
    Api,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    logged,
    webhook,
)
from tests.integration.serve import eventually

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-0123456789abcdef"

FAST = FAST_RETRIES


async def count(database_url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def create_batch(
    http: aiohttp.ClientSession, daemon: DaemonProcess, tasks: list[dict[str, Any]]
) -> list[str]:
    async with http.post(f"{daemon.base_url}/v1/tasks/batch", json={"tasks": tasks}) as resp:
        data = await resp.json()
        assert resp.status == 201, data
    return [t["id"] for t in data["items"]]


CONFIG_A = """
[executor]
concurrency = 4

[retry]
base_s = 0.05
cap_s = 0.2
"""

# Invalid: the whole file is refused, naming the key.
CONFIG_BAD = CONFIG_A.replace("concurrency = 4", "concurrency = 0")

CONFIG_B = f"""
[executor]
concurrency = 8

[retry]
base_s = 0.05
cap_s = 0.2

[http]
body_limit_bytes = 4096
tokens = [{{ name = "ops", token = "{ADMIN_TOKEN}", role = "admin" }}]
"""


@pytest.mark.timeout(120)
async def test_sighup_reload_under_load_applies_valid_and_rejects_invalid(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    http: aiohttp.ClientSession,
    database_url: str,
    tmp_path: Path,
) -> None:
    config = tmp_path / "scheduler.toml"
    config.write_text(CONFIG_A)
    daemon = await start_daemon({"SCHEDULER_CONFIG": str(config)})
    start = datetime.now(UTC)
    ids = await create_batch(
        http,
        daemon,
        [
            webhook(receiver, {"n": n}, run_at=(start + timedelta(milliseconds=10 * n)).isoformat())
            for n in range(300)
        ],
    )
    async with http.get(f"{daemon.base_url}/v1/admin/config") as resp:
        first = await resp.json()
    assert first["config"]["executor"]["concurrency"] == 4

    config.write_text(CONFIG_BAD)
    daemon.send_signal(signal.SIGHUP)
    rejected = await daemon.wait_for_log("config_reload_rejected")
    assert "executor.concurrency" in rejected["error"]

    config.write_text(CONFIG_B)
    daemon.send_signal(signal.SIGHUP)
    reloaded = await daemon.wait_for_log("config_reloaded")
    assert reloaded["changed"] == ["executor.concurrency", "http.tokens"]
    restart = await daemon.wait_for_log("config_restart_required")
    assert restart["keys"] == ["http.body_limit_bytes"]
    assert ADMIN_TOKEN not in daemon.log_tail(400)

    # Tokens applied live: anonymous requests are refused now.
    async with http.get(f"{daemon.base_url}/v1/admin/config") as resp:
        assert resp.status == 401
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{daemon.base_url}/v1/admin/config", headers=headers) as resp:
        assert resp.status == 200
        now = await resp.json()
    assert now["config"]["executor"]["concurrency"] == 8
    assert now["config"]["http"]["body_limit_bytes"] == 1_048_576  # kept until a restart
    assert now["config"]["http"]["tokens"] == [{"name": "ops", "token": "***", "role": "admin"}]
    assert now["loaded_at"] > first["loaded_at"]

    async def all_done() -> bool:
        done = await count(database_url, "SELECT count(*) FROM tasks WHERE status = 'completed'")
        return done == len(ids)

    await eventually(all_done, timeout=60)
    # None lost, none run twice.
    assert sorted(r.json()["n"] for r in receiver.requests) == list(range(300))
    assert await count(database_url, "SELECT count(*) FROM task_attempts") == 300
    async with http.get(f"{daemon.base_url}/metrics") as resp:
        text = await resp.text()
    assert 'scheduler_config_reloads_total{result="rejected"} 1.0' in text
    assert 'scheduler_config_reloads_total{result="applied"} 1.0' in text
    assert "scheduler_executor_capacity 8.0" in text


@pytest.mark.timeout(90)
async def test_paused_daemon_is_fenced_out_when_it_resumes(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    database_url: str,
) -> None:
    settings = {
        **FAST,
        "SCHEDULER_EXECUTOR__LEASE_S": "2",
        "SCHEDULER_EXECUTOR__HEARTBEAT_S": "0.5",
    }
    a = await start_daemon(settings, name="daemon-A")
    receiver.block()
    task = await api_for(a).create_task(webhook(receiver, {"pause": True}, timeout_s=60))
    await receiver.wait_for_requests(1)
    a.send_signal(signal.SIGSTOP)  # past its lease: it cannot renew, complete or notice
    try:
        receiver.unblock()
        b = await start_daemon(settings, name="daemon-B")
        api_b = api_for(b)
        done = await api_b.wait_for_status(task["id"], "completed", timeout=60)
        await b.wait_for_log("task_rescued", task_id=task["id"])
    finally:
        a.send_signal(signal.SIGCONT)
    # A wakes up with its answer in hand: its late heartbeat and completion change nothing.
    fenced = a.wait_for_log("completion_fenced", task_id=task["id"])
    lost = a.wait_for_log("lease_lost", task_id=task["id"])
    finished, pending = await asyncio.wait(
        [asyncio.ensure_future(fenced), asyncio.ensure_future(lost)],
        return_when=asyncio.FIRST_COMPLETED,
        timeout=30,
    )
    for p in pending:
        p.cancel()
    assert finished, a.log_tail()
    after = await api_b.get_task(task["id"])
    assert (after["status"], after["attempts"], after["finished_at"]) == (
        "completed",
        2,
        done["finished_at"],
    )
    outcomes = [x["outcome"] for x in await api_b.attempts(task["id"])]
    assert outcomes == ["lost", "succeeded"]
    assert len(receiver.requests) == 2


@pytest.mark.timeout(120)
async def test_database_connections_terminated_mid_run_lose_nothing(
    start_daemon: StartDaemon,
    http: aiohttp.ClientSession,
    database_url: str,
) -> None:
    daemon = await start_daemon({**FAST, "SCHEDULER_DISCOVERY__POLL_INTERVAL_S": "0.5"})
    start = datetime.now(UTC)
    total = 1000
    ids = await create_batch(
        http,
        daemon,
        [
            {
                "action": "log",
                "payload": {"message": f"task {n}"},
                "run_at": (start + timedelta(milliseconds=4 * n)).isoformat(),
            }
            for n in range(total)
        ],
    )
    admin = await asyncpg.connect(database_url)
    name = await admin.fetchval("SELECT current_database()")
    try:
        for round_, threshold in enumerate((total // 4, total // 2), start=1):

            async def reached(threshold: int = threshold) -> bool:
                done = await admin.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
                return int(done) >= threshold

            await eventually(reached, timeout=60)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            assert killed >= 2  # the pool and the LISTEN connection at least
            # LISTEN is re-established after each termination.
            await eventually(logged(daemon, "listener_reconnected", round_))

        async def all_done() -> bool:
            done = await admin.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
            return int(done) == total

        await eventually(all_done, timeout=90)
        # Each task ran once, or twice when a terminated completion came back as a lost
        # lease; never recorded twice, and none is missing.
        attempts = await admin.fetch(
            "SELECT task_id, count(*) FILTER (WHERE outcome = 'succeeded') AS ok "
            "FROM task_attempts GROUP BY task_id"
        )
        assert len(attempts) == total
        assert {r["ok"] for r in attempts} == {1}
        assert {uuid.UUID(i) for i in ids} == {r["task_id"] for r in attempts}
    finally:
        await admin.close()
    async with http.get(f"{daemon.base_url}/readyz") as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.timeout(60)
async def test_event_loop_lag_above_the_threshold_makes_readyz_fail(
    start_daemon: StartDaemon, http: aiohttp.ClientSession
) -> None:
    # Any real loop overshoots a sleep by more than a microsecond: the watchdog must say so.
    daemon = await start_daemon(
        {"SCHEDULER_WATCHDOG__MAX_LOOP_LAG_S": "0.000001", "SCHEDULER_WATCHDOG__INTERVAL_S": "0.1"}
    )
    reasons: list[str] = []

    async def lagging() -> bool:
        async with http.get(f"{daemon.base_url}/readyz") as resp:
            body = await resp.json()
        reasons[:] = body.get("reasons") or []
        return resp.status == 503 and any("watchdog.max_loop_lag_s" in r for r in reasons)

    await eventually(lagging, timeout=30)
    await daemon.wait_for_log("event_loop_lag")
    async with http.get(f"{daemon.base_url}/healthz") as resp:
        assert resp.status == 200  # alive, only not ready
