"""Dead letters over HTTP: list failed tasks, re-queue them, discard them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    async with serve_api(store) as session:
        yield session


async def failed(store: PostgresStore, action: str = "noop", queue: str = "default") -> uuid.UUID:
    task, _ = await store.create_task(
        NewTask(action=action, payload={}, queue=queue, max_attempts=1)
    )
    [claimed] = await store.claim("me", 1, 30.0)
    assert claimed.id == task.id
    result = AttemptResult(task.id, 1, Outcome.FAILED, TaskStatus.FAILED, error=f"boom {action}")
    assert await store.complete("me", [result]) == {task.id}
    return task.id


async def test_list_retry_and_discard(
    api: aiohttp.ClientSession, store: PostgresStore, pool: asyncpg.Pool
) -> None:
    a = await failed(store, "noop", "mail")
    b = await failed(store, "log", "mail")
    c = await failed(store, "noop", "reports")
    await store.create_task(NewTask(action="noop", payload={}, delay_s=600))  # not failed

    async with api.get("/v1/dead-letters") as resp:
        assert resp.status == 200
        items = (await resp.json())["items"]
    assert [i["id"] for i in items] == [str(c), str(b), str(a)]
    assert items[0]["last_error"] == "boom noop"
    async with api.get("/v1/dead-letters", params={"queue": "mail", "action": "log"}) as resp:
        assert [i["id"] for i in (await resp.json())["items"]] == [str(b)]

    async with api.post("/v1/dead-letters/retry", json={"ids": [str(a)]}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"count": 1, "ids": [str(a)]}
    row = await store.get_task(a)
    assert row is not None
    assert row.status is TaskStatus.SCHEDULED
    [again] = await store.claim("me", 5, 30.0)
    assert again.id == a
    assert again.series_attempt == 1

    async with api.request("DELETE", "/v1/dead-letters", json={"queue": "mail"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"count": 1, "ids": [str(b)]}
    assert await store.get_task(b) is None
    assert await pool.fetchval("SELECT count(*) FROM task_attempts WHERE task_id = $1", b) == 0

    async with api.post("/v1/dead-letters/retry", json={"all": True}) as resp:
        assert (await resp.json())["ids"] == [str(c)]


async def test_selection_is_required(api: aiohttp.ClientSession) -> None:
    bodies: list[dict[str, object]] = [{}, {"ids": []}, {"ids": ["x"]}, {"surprise": 1}]
    for body in bodies:
        async with api.post("/v1/dead-letters/retry", json=body) as resp:
            assert resp.status == 422, body
            assert (await resp.json())["errors"]


async def test_retry_and_discard_need_admin(store: PostgresStore) -> None:
    tokens = [
        {"name": "svc", "token": "write-token-0123456789", "role": "write"},
        {"name": "ops", "token": "admin-token-0123456789", "role": "admin"},
    ]
    async with serve_api(store, Settings(http={"tokens": tokens})) as api:
        write = {"Authorization": "Bearer write-token-0123456789"}
        admin = {"Authorization": "Bearer admin-token-0123456789"}
        async with api.get("/v1/dead-letters", headers=write) as resp:
            assert resp.status == 200
        for method, path in (("POST", "/v1/dead-letters/retry"), ("DELETE", "/v1/dead-letters")):
            async with api.request(method, path, json={"all": True}, headers=write) as resp:
                assert resp.status == 403
            async with api.request(method, path, json={"all": True}, headers=admin) as resp:
                assert resp.status == 200


async def test_dead_letters_mask_headers_named_in_log_redact_headers(store: PostgresStore) -> None:
    task, _ = await store.create_task(
        NewTask(
            action="webhook",
            payload={
                "url": "https://example.com/hook",
                "headers": {"X-Tenant-Secret": "s-1", "Accept": "text/plain"},
            },
        )
    )
    (claimed,) = await store.claim("w", 1, 30.0)
    await store.complete(
        "w",
        [
            AttemptResult(
                task_id=task.id,
                attempt=claimed.attempt,
                outcome=Outcome.FAILED,
                next_status=TaskStatus.FAILED,
                error="HTTP 500",
                duration_ms=1.0,
            )
        ],
    )
    settings = Settings(log={"redact_headers": ["x-tenant-secret"]})
    async with serve_api(store, settings) as api, api.get("/v1/dead-letters") as resp:
        body = await resp.json()
    (item,) = body["items"]
    assert item["payload"]["headers"] == {"X-Tenant-Secret": "***", "Accept": "text/plain"}
