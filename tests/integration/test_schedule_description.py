"""Every schedule the API returns, and every preview, carries its rule in words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api

TASK = {"action": "log", "payload": {"message": "m"}}
NEWSLETTER = {
    "name": "newsletter",
    "preset": "weekly",
    "weekday": 0,
    "at": "09:00",
    "timezone": "Europe/Oslo",
    "task": TASK,
}
MONDAYS = "every Monday at 09:00 Europe/Oslo"


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    async with serve_api(store) as session:
        yield session


async def _call(
    api: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with api.request(method, path, json=body) as resp:
        return resp.status, await resp.json()


async def test_every_schedule_response_describes_its_rule(api: aiohttp.ClientSession) -> None:
    status, created = await _call(api, "POST", "/v1/schedules", NEWSLETTER)
    assert status == 201, created
    assert created["description"] == MONDAYS
    path = f"/v1/schedules/{created['id']}"
    assert (await _call(api, "GET", path))[1]["description"] == MONDAYS
    _, page = await _call(api, "GET", "/v1/schedules")
    assert [s["description"] for s in page["items"]] == [MONDAYS]
    _, paused = await _call(api, "POST", f"{path}/pause")
    assert (paused["paused"], paused["description"]) == (True, MONDAYS)
    _, resumed = await _call(api, "POST", f"{path}/resume")
    assert (resumed["paused"], resumed["description"]) == (False, MONDAYS)
    _, preview = await _call(api, "GET", f"{path}/preview?count=2")
    assert preview["description"] == MONDAYS

    # A PATCH of another field keeps the rule and its words; a new rule gets new words.
    status, renamed = await _call(api, "PATCH", path, {"name": "letters"})
    assert status == 200, renamed
    assert renamed["description"] == MONDAYS
    status, changed = await _call(api, "PATCH", path, {"cron": "*/15 9-17 * * 1-5"})
    assert status == 200, changed
    assert changed["description"] == (
        "every 15 minutes from 09:00 to 17:45, Monday to Friday "
        "(cron */15 9-17 * * 1-5) Europe/Oslo"
    )
    status, odd = await _call(api, "PATCH", path, {"cron": "0 0 L * *", "timezone": "UTC"})
    assert status == 200, odd
    assert odd["description"] == "cron 0 0 L * * (UTC)"


async def test_the_body_preview_describes_the_rule_as_typed(api: aiohttp.ClientSession) -> None:
    body = {"name": "x", "interval_s": 900, "task": TASK}
    status, preview = await _call(api, "POST", "/v1/schedules/preview?count=1", body)
    assert status == 200, preview
    assert preview["description"] == "every 15 minutes"
    body = {"name": "x", "preset": "monthly", "day_of_month": 1, "timezone": "Europe/Oslo"}
    status, preview = await _call(api, "POST", "/v1/schedules/preview", {**body, "task": TASK})
    assert preview["description"] == "on day 1 of every month at 00:00 Europe/Oslo"


async def test_the_description_is_read_only(api: aiohttp.ClientSession) -> None:
    status, problem = await _call(
        api, "POST", "/v1/schedules", {**NEWSLETTER, "description": "every day"}
    )
    assert status == 422
    assert [e["field"] for e in problem["errors"]] == ["description"]
