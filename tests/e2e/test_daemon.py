"""The real daemon process over real HTTP: delivery, retries, SIGTERM drain, kill -9 rescue and
the API's answers to bad input."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
    webhook,
)

pytestmark = pytest.mark.e2e

PROBLEM_JSON = "application/problem+json"


async def db_task_row(database_url: str, task_id: str) -> tuple[asyncpg.Record, int]:
    """The task's row and its number of recorded attempts, read straight from PostgreSQL (for
    when no daemon is running to ask)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, attempts, lease_owner, last_error FROM tasks WHERE id = $1",
            uuid.UUID(task_id),
        )
        count = await conn.fetchval(
            "SELECT count(*) FROM task_attempts WHERE task_id = $1", uuid.UUID(task_id)
        )
    finally:
        await conn.close()
    assert row is not None
    return row, int(count)


@pytest.mark.timeout(60)
async def test_webhook_scheduled_ahead_is_delivered_once(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    daemon = await start_daemon(FAST_RETRIES)
    api = api_for(daemon)
    body = {"hello": "world", "n": 1, "nested": {"list": [1, 2, 3]}}
    run_at = datetime.now(UTC) + timedelta(seconds=1)

    created = await api.create_task(webhook(receiver, body, run_at=run_at.isoformat()))
    assert created["status"] == "scheduled"
    assert datetime.fromisoformat(created["run_at"]) == run_at

    task = await api.wait_for_status(created["id"], "completed", timeout=20)
    requests = await receiver.wait_for_requests(1)
    assert len(requests) == 1, requests
    [request] = requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.json() == body
    assert request.headers["Content-Type"].startswith("application/json")
    # Not before it was due (same host clock for the test and PostgreSQL), and not much later.
    assert request.received_at >= run_at - timedelta(milliseconds=5), (request, run_at)
    assert request.received_at <= run_at + timedelta(seconds=5), (request, run_at)

    assert task["attempts"] == 1
    assert task["result"] == {"status": 200}
    assert task["last_error"] is None
    assert task["lease_owner"] is None
    assert task["finished_at"] is not None

    attempts = await api.attempts(created["id"])
    assert len(attempts) == 1, attempts
    assert attempts[0]["number"] == 1
    assert attempts[0]["outcome"] == "succeeded"
    assert attempts[0]["output"].startswith("HTTP 200")
    assert attempts[0]["error"] is None
    # Still exactly one delivery after everything was recorded.
    assert len(receiver.requests) == 1


@pytest.mark.timeout(60)
async def test_webhook_answering_500_is_retried_then_fails(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    receiver.status = 500
    receiver.reply = "boom"
    daemon = await start_daemon({**FAST_RETRIES, "SCHEDULER_RETRY__MAX_ATTEMPTS": "3"})
    api = api_for(daemon)

    created = await api.create_task(webhook(receiver, {"job": 7}))
    assert created["max_attempts"] == 3

    task = await api.wait_for_status(created["id"], "failed", timeout=20)
    assert len(receiver.requests) == 3, receiver.requests
    assert all(r.json() == {"job": 7} for r in receiver.requests)
    assert task["attempts"] == 3
    assert "500" in (task["last_error"] or ""), task
    assert task["result"] is None
    assert task["finished_at"] is not None

    attempts = await api.attempts(created["id"])
    assert [a["number"] for a in attempts] == [1, 2, 3], attempts
    assert [a["outcome"] for a in attempts] == ["failed"] * 3, attempts
    for attempt in attempts:
        assert "500" in (attempt["error"] or ""), attempt
        assert attempt["output"].startswith("HTTP 500"), attempt
    assert len(receiver.requests) == 3


@pytest.mark.timeout(60)
async def test_sigterm_releases_a_running_task_for_the_next_daemon(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
    database_url: str,
) -> None:
    receiver.block()
    settings = {**FAST_RETRIES, "SCHEDULER_SHUTDOWN__GRACE_S": "1"}
    a = await start_daemon(settings, name="daemon-A")
    api_a = api_for(a)
    created = await api_a.create_task(webhook(receiver, {"long": True}))
    task_id = created["id"]
    await receiver.wait_for_requests(1)
    running = await api_a.get_task(task_id)
    assert running["status"] == "running"
    assert running["attempts"] == 1

    a.send_signal(signal.SIGTERM)
    await a.wait_for_log("drain_started", timeout=10)
    # The receiver still holds the request, so A is inside its 1 s grace period: not ready.
    async with http.get(api_a.at("/readyz")) as resp:
        readiness = await resp.json()
        assert resp.status == 503, readiness
    assert readiness["status"] == "unavailable"
    assert any("draining" in reason for reason in readiness["reasons"]), readiness

    assert await a.wait(timeout=20) == 0
    await a.wait_for_log("task_released", task_id=task_id)
    await a.wait_for_log("daemon_stopped")
    assert not a.events("task_failed"), a.log_tail()

    row, recorded = await db_task_row(database_url, task_id)
    assert row["status"] == "scheduled", dict(row)
    assert row["attempts"] == 0, dict(row)
    assert row["lease_owner"] is None
    assert recorded == 0

    receiver.unblock()
    b = await start_daemon(settings, name="daemon-B")
    api_b = api_for(b)
    task = await api_b.wait_for_status(task_id, "completed", timeout=20)
    assert task["attempts"] == 1
    attempts = await api_b.attempts(task_id)
    assert len(attempts) == 1, attempts
    assert attempts[0]["number"] == 1
    assert attempts[0]["outcome"] == "succeeded"
    b_started = await b.wait_for_log("daemon_started")
    assert attempts[0]["worker"] == b_started["owner"]
    # One delivery cut short by the shutdown, one that completed.
    assert len(receiver.requests) == 2, receiver.requests


@pytest.mark.timeout(60)
async def test_kill_9_task_is_rescued_by_another_daemon(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    receiver.block()
    settings = {
        **FAST_RETRIES,
        "SCHEDULER_EXECUTOR__LEASE_S": "2",
        "SCHEDULER_EXECUTOR__HEARTBEAT_S": "0.5",
    }
    a = await start_daemon(settings, name="daemon-A")
    a_owner = (await a.wait_for_log("daemon_started"))["owner"]
    api_a = api_for(a)
    created = await api_a.create_task(webhook(receiver, {"survive": "kill -9"}))
    task_id = created["id"]
    await receiver.wait_for_requests(1)
    running = await api_a.get_task(task_id)
    assert running["status"] == "running"
    assert running["lease_owner"] == a_owner

    a.kill()
    assert await a.wait(timeout=10) == -signal.SIGKILL
    assert not a.events("daemon_stopped")

    receiver.unblock()
    b = await start_daemon(settings, name="daemon-B")
    assert b.port != a.port
    b_owner = (await b.wait_for_log("daemon_started"))["owner"]
    api_b = api_for(b)
    task = await api_b.wait_for_status(task_id, "completed", timeout=30)
    await b.wait_for_log("task_rescued", task_id=task_id)
    assert task["attempts"] == 2
    assert task["result"] == {"status": 200}

    attempts = await api_b.attempts(task_id)
    assert sorted(x["outcome"] for x in attempts) == ["lost", "succeeded"], attempts
    lost, succeeded = attempts
    assert (lost["number"], lost["outcome"], lost["worker"]) == (1, "lost", a_owner)
    assert (succeeded["number"], succeeded["outcome"], succeeded["worker"]) == (
        2,
        "succeeded",
        b_owner,
    )
    assert succeeded["output"].startswith("HTTP 200")
    assert len(receiver.requests) == 2, receiver.requests
    assert all(r.json() == {"survive": "kill -9"} for r in receiver.requests)


async def problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with this status; return its body."""
    text = await resp.text()
    assert resp.status == status, (resp.status, text)
    assert resp.content_type == PROBLEM_JSON, (resp.content_type, text)
    body = await resp.json(content_type=PROBLEM_JSON)
    assert isinstance(body, dict)
    assert body["status"] == status, body
    assert body["title"], body
    return body


def error_fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


@pytest.mark.timeout(60)
async def test_api_rejects_bad_input(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon({**FAST_RETRIES, "SCHEDULER_HTTP__BODY_LIMIT_BYTES": "2048"})
    api = api_for(daemon)
    tasks_url = api.at("/v1/tasks")

    # Malformed JSON.
    async with http.post(
        tasks_url, data=b'{"action": "noop",', headers={"Content-Type": "application/json"}
    ) as resp:
        body = await problem(resp, 400)
    assert "body" in error_fields(body), body

    # run_at without a UTC offset.
    naive = {"action": "noop", "run_at": "2030-01-01T00:00:00"}
    async with http.post(tasks_url, json=naive) as resp:
        body = await problem(resp, 422)
    assert any("run_at" in f for f in error_fields(body)), body

    # A webhook without a url.
    no_url = {"action": "webhook", "payload": {"method": "POST", "json": {"a": 1}}}
    async with http.post(tasks_url, json=no_url) as resp:
        body = await problem(resp, 422)
    assert "payload.url" in error_fields(body), body

    # Unknown task id: get, attempts, cancel.
    unknown = uuid.uuid4()
    for method, path in (
        ("GET", f"/v1/tasks/{unknown}"),
        ("GET", f"/v1/tasks/{unknown}/attempts"),
        ("DELETE", f"/v1/tasks/{unknown}"),
    ):
        async with http.request(method, api.at(path)) as resp:
            await problem(resp, 404)

    # Cancelling a task that already completed.
    done = await api.create_task({"action": "noop"})
    await api.wait_for_status(done["id"], "completed", timeout=20)
    async with http.delete(api.at(f"/v1/tasks/{done['id']}")) as resp:
        body = await problem(resp, 409)
    assert "completed" in body.get("detail", ""), body
    assert (await api.get_task(done["id"]))["status"] == "completed"

    # Cancelling a task due in an hour.
    later = datetime.now(UTC) + timedelta(hours=1)
    pending = await api.create_task({"action": "noop", "run_at": later.isoformat()})
    assert pending["status"] == "scheduled"
    async with http.delete(api.at(f"/v1/tasks/{pending['id']}")) as resp:
        cancelled = await resp.json()
        assert resp.status == 200, cancelled
    assert cancelled["status"] == "cancelled"
    again = await api.get_task(pending["id"])
    assert again["status"] == "cancelled"
    assert again["finished_at"] is not None
    assert await api.attempts(pending["id"]) == []

    # A body over http.body_limit_bytes (2048).
    big = {"action": "noop", "metadata": {"blob": "x" * 4096}}
    async with http.post(tasks_url, json=big) as resp:
        await problem(resp, 413)

    # None of that hurt the daemon.
    async with http.get(api.at("/healthz")) as resp:
        assert resp.status == 200
    async with http.get(api.at("/v1/tasks")) as resp:
        listed = await resp.json()
    assert {t["id"] for t in listed["items"]} == {done["id"], pending["id"]}
