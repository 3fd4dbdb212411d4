"""Python handlers in the real daemon process: the example module ``examples.attendance`` is
loaded through ``handlers.modules``, its tasks run against PostgreSQL, and a handler's own
transaction rolls back while its failed attempt stays on record (seed 003)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from examples.attendance import CARD_LIMIT_CENTS, NEWSLETTER_RETRY_AFTER
from tests.e2e.conftest import Api, DaemonProcess, StartDaemon

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def handler_env(modules: str = '["examples.attendance"]') -> dict[str, str]:
    """Load ``modules`` as handler modules; the repository root on the path makes ``examples``
    importable whatever the daemon's working directory. Retries come quickly."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        "SCHEDULER_HANDLERS__MODULES": modules,
        "SCHEDULER_RETRY__BASE_S": "0.05",
        "SCHEDULER_RETRY__CAP_S": "0.2",
        "PYTHONPATH": path,
    }


async def merges(database_url: str) -> list[asyncpg.Record]:
    """Every row of the example's table (none when the table was never committed)."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('example_merges')") is None:
            return []
        return await conn.fetch("SELECT event_id, pools, attempt FROM example_merges")
    finally:
        await conn.close()


def merge_task(event_id: int, pools: list[str], **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"event_id": event_id, "pools": pools}
    payload.update(extra.pop("payload", {}))
    return {"action": "attendance.merge_pools", "payload": payload, **extra}


@pytest.mark.timeout(60)
async def test_merge_pools_commits_and_returns_its_result(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api], database_url: str
) -> None:
    daemon = await start_daemon(handler_env())
    loaded = await daemon.wait_for_log("handlers_loaded")
    assert "attendance.merge_pools" in loaded["handlers"], loaded
    api = api_for(daemon)

    created = await api.create_task(merge_task(41, ["waitlist", "members", "guests"]))
    task = await api.wait_for_status(created["id"], "completed", timeout=20)

    assert task["result"] == {"event_id": 41, "merged": 3}
    assert task["attempts"] == 1
    [attempt] = await api.attempts(created["id"])
    assert attempt["outcome"] == "succeeded"
    rows = await merges(database_url)
    assert [(r["event_id"], r["pools"], r["attempt"]) for r in rows] == [
        (41, ["waitlist", "members", "guests"], 1)
    ]


@pytest.mark.timeout(60)
async def test_a_failing_handler_rolls_back_but_its_attempts_are_recorded(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api], database_url: str
) -> None:
    daemon = await start_daemon(handler_env())
    api = api_for(daemon)
    # A merge that commits first, so the table exists and the rollback below is about rows.
    ok = await api.create_task(merge_task(1, ["a", "b"]))
    await api.wait_for_status(ok["id"], "completed", timeout=20)

    created = await api.create_task(
        merge_task(2, ["a", "b"], payload={"fail_after_write": True}, max_attempts=2)
    )
    task = await api.wait_for_status(created["id"], "failed", timeout=20)

    message = "RuntimeError: merging the pools of event 2 failed"
    assert task["attempts"] == 2
    assert message in (task["last_error"] or ""), task
    assert task["result"] is None
    attempts = await api.attempts(created["id"])
    assert [a["number"] for a in attempts] == [1, 2]
    assert [a["outcome"] for a in attempts] == ["failed", "failed"]
    assert all(message in (a["error"] or "") for a in attempts), attempts
    # Both attempts wrote a row inside their transaction; neither row was committed.
    rows = await merges(database_url)
    assert [r["event_id"] for r in rows] == [1]


@pytest.mark.timeout(60)
async def test_retry_after_sets_the_delay_before_the_next_attempt(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api]
) -> None:
    daemon = await start_daemon(handler_env())
    api = api_for(daemon)

    created = await api.create_task(
        {"action": "newsletter.send_weekly", "payload": {"issue": 12}, "max_attempts": 3}
    )
    task = await api.wait_for_status(created["id"], "completed", timeout=20)

    assert task["result"] == {"issue": 12}
    first, second = await api.attempts(created["id"])
    assert (first["outcome"], second["outcome"]) == ("failed", "succeeded")
    assert first["error"] == "mail provider is busy"
    # The configured backoff here is at most 0.05 s: the wait came from Retry(after=...).
    waited = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(
        first["started_at"]
    )
    assert waited >= NEWSLETTER_RETRY_AFTER, waited


@pytest.mark.timeout(60)
async def test_fail_ends_the_task_after_one_attempt(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api]
) -> None:
    daemon = await start_daemon(handler_env())
    api = api_for(daemon)

    declined = await api.create_task(
        {
            "action": "billing.charge",
            "payload": {"customer_id": "c-1", "amount_cents": CARD_LIMIT_CENTS + 1},
            "max_attempts": 5,
        }
    )
    charged = await api.create_task(
        {
            "action": "billing.charge",
            "payload": {"customer_id": "c-2", "amount_cents": 2500},
            "max_attempts": 5,
        }
    )
    failed = await api.wait_for_status(declined["id"], "failed", timeout=20)
    completed = await api.wait_for_status(charged["id"], "completed", timeout=20)

    assert failed["attempts"] == 1
    assert failed["last_error"] == "card declined"
    [attempt] = await api.attempts(declined["id"])
    assert (attempt["outcome"], attempt["error"]) == ("failed", "card declined")
    assert completed["result"] == {"customer_id": "c-2", "charged_cents": 2500}


async def problem_fields(resp: aiohttp.ClientResponse) -> list[str]:
    body = await resp.json(content_type=None)
    assert resp.status == 422, (resp.status, body)
    assert resp.content_type == "application/problem+json", resp.content_type
    return [e["field"] for e in body.get("errors", [])]


@pytest.mark.timeout(60)
async def test_unknown_actions_and_invalid_payloads_are_rejected_at_creation(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(handler_env())
    tasks_url = api_for(daemon).at("/v1/tasks")

    async with http.post(tasks_url, json={"action": "attendance.split_pools"}) as resp:
        assert await problem_fields(resp) == ["action"]

    async with http.post(tasks_url, json=merge_task(3, ["only-one"])) as resp:
        assert await problem_fields(resp) == ["payload.pools"]

    async with http.post(tasks_url, json=merge_task(0, ["a", "b"])) as resp:
        assert await problem_fields(resp) == ["payload.event_id"]


@pytest.mark.timeout(60)
async def test_the_daemon_refuses_to_start_when_a_handler_module_cannot_be_imported(
    start_daemon: StartDaemon,
) -> None:
    daemon = await start_daemon(
        handler_env('["examples.attendance", "examples.no_such_module"]'), ready=False
    )

    failed = await daemon.wait_for_log("handlers_load_failed")
    code = await daemon.wait()

    assert code != 0
    assert "'examples.no_such_module'" in failed["error"], failed
    assert not daemon.events("http_started")
    assert not daemon.events("daemon_started")
