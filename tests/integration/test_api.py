"""The HTTP API on loopback against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    settings = Settings(
        retry={"max_attempts": 4},
        executor={"default_timeout_s": 12.5},
        http={"body_limit_bytes": 4096},
    )
    async with serve_api(store, settings) as session:
        yield session


async def test_create_applies_defaults_and_reads_back(api: aiohttp.ClientSession) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"action": "log", "payload": {"message": "hi"}, "runAt": run_at, "priority": 3}
    async with api.post("/v1/tasks", json=body) as resp:
        assert resp.status == 201
        created = await resp.json()
        assert resp.headers["Location"] == f"/v1/tasks/{created['id']}"
    assert created["status"] == "scheduled"
    assert created["max_attempts"] == 4
    assert created["timeout_s"] == 12.5
    assert created["priority"] == 3
    assert datetime.fromisoformat(created["run_at"]) == datetime.fromisoformat(run_at)
    async with api.get(f"/v1/tasks/{created['id']}") as resp:
        assert resp.status == 200
        assert (await resp.json())["payload"] == {"message": "hi"}
    async with api.get(f"/v1/tasks/{created['id']}/attempts") as resp:
        assert (await resp.json()) == {"items": []}


async def test_seed_shorthand_is_a_webhook(api: aiohttp.ClientSession) -> None:
    body = {
        "executeAt": "2030-10-25T14:00:00Z",
        "url": "https://internal-service/process",
        "method": "POST",
        "data": {"k": 1},
    }
    async with api.post("/v1/tasks", json=body) as resp:
        assert resp.status == 201
        task = await resp.json()
    assert task["action"] == "webhook"
    assert task["payload"]["url"] == "https://internal-service/process"
    assert task["payload"]["json"] == {"k": 1}


async def test_idempotency_key_header_returns_the_original(api: aiohttp.ClientSession) -> None:
    body = {"action": "noop", "delay_s": 600}
    headers = {"Idempotency-Key": "order-42"}
    async with api.post("/v1/tasks", json=body, headers=headers) as first:
        assert first.status == 201
        original = await first.json()
    async with api.post("/v1/tasks", json=body, headers=headers) as second:
        assert second.status == 200
        assert (await second.json())["id"] == original["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "noop", "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"action": "webhook", "payload": {}}, "payload.url"),
        ({"action": "webhook", "payload": {"url": "ftp://x"}}, "payload.url"),
        ({"action": "nope"}, "action"),
        ({"action": "noop", "delay_s": -1}, "delay_s"),
        ({"action": "noop", "max_attempts": 0}, "max_attempts"),
        ({"action": "noop", "surprise": 1}, "surprise"),
        ({"action": "noop", "run_at": "2030-01-01T00:00:00Z", "delay_s": 5}, "body"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_bodies_name_the_field(
    api: aiohttp.ClientSession, body: object, field: str
) -> None:
    async with api.post("/v1/tasks", json=body) as resp:
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
    assert problem["status"] == 422
    fields = [e["field"] for e in problem["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), fields


async def test_malformed_json_and_oversized_bodies(api: aiohttp.ClientSession) -> None:
    async with api.post("/v1/tasks", data=b"{not json") as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
    big = {"action": "noop", "payload": {"blob": "x" * 8000}}
    async with api.post("/v1/tasks", json=big) as resp:
        assert resp.status == 413
        assert resp.content_type == "application/problem+json"


async def test_unknown_and_malformed_ids(api: aiohttp.ClientSession) -> None:
    async with api.get("/v1/tasks/00000000-0000-0000-0000-000000000000") as resp:
        assert resp.status == 404
    async with api.get("/v1/tasks/not-a-uuid") as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["field"] == "task_id"
    async with api.delete("/v1/tasks/00000000-0000-0000-0000-000000000000") as resp:
        assert resp.status == 404


async def test_cancel_then_cancel_again_conflicts(api: aiohttp.ClientSession) -> None:
    async with api.post("/v1/tasks", json={"action": "noop", "delay_s": 600}) as resp:
        task = await resp.json()
    async with api.delete(f"/v1/tasks/{task['id']}") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "cancelled"
    async with api.delete(f"/v1/tasks/{task['id']}") as resp:
        assert resp.status == 409
        assert "cancelled" in (await resp.json())["detail"]


async def test_list_filters_and_pages(api: aiohttp.ClientSession) -> None:
    ids = []
    for i in range(7):
        action = "log" if i % 2 else "noop"
        async with api.post("/v1/tasks", json={"action": action, "delay_s": 600}) as resp:
            ids.append((await resp.json())["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", "status": "scheduled,running"}
        if cursor:
            params["cursor"] = cursor
        async with api.get("/v1/tasks", params=params) as resp:
            assert resp.status == 200
            page = await resp.json()
        pages += 1
        seen.extend(t["id"] for t in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, no gaps, no repeats
    async with api.get("/v1/tasks", params={"action": "log"}) as resp:
        logs = (await resp.json())["items"]
    assert len(logs) == 3
    assert all(t["action"] == "log" for t in logs)
    for bad in ({"status": "bogus"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "!!"}):
        async with api.get("/v1/tasks", params=bad) as resp:
            assert resp.status == 422, bad
            assert (await resp.json())["errors"][0]["field"].startswith(next(iter(bad)))
