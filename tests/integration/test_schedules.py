"""Schedules against a real PostgreSQL: the API, the expander, misfire and overlap."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from scheduler_daemon.clock import SystemClock
from scheduler_daemon.engine.expander import LIMITED_RETRY_S, Expander
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from scheduler_daemon.store.schedules import PostgresScheduleStore
from tests.integration.serve import eventually, serve_api


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    async with serve_api(store, Settings(expander={"horizon_s": 5})) as session:
        yield session


def expander(pool: asyncpg.Pool, horizon_s: float = 5.0) -> Expander:
    return Expander(
        PostgresScheduleStore(pool),
        SystemClock(),
        horizon_s=lambda: horizon_s,
        batch_size=lambda: 100,
        poll_interval_s=lambda: 0.2,
    )


async def _post(api: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with api.post(path, json=body) as resp:
        return resp.status, (await resp.json() if resp.status != 204 else None)


def _fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem.get("errors", [])]


NEWSLETTER = {
    "name": "newsletter",
    "preset": "weekly",
    "weekday": 0,
    "at": "09:00",
    "timezone": "Europe/Oslo",
    "task": {"action": "log", "payload": {"message": "weekly newsletter"}},
}


async def test_create_read_list_preview(api: aiohttp.ClientSession) -> None:
    status, created = await _post(api, "/v1/schedules", NEWSLETTER)
    assert status == 201, created
    assert created["timezone"] == "Europe/Oslo"
    assert created["misfire_policy"] == "run_once"
    next_run = datetime.fromisoformat(created["next_run_at"])
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Oslo"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)

    async with api.get(f"/v1/schedules/{created['id']}/preview", params={"count": "3"}) as resp:
        assert resp.status == 200
        preview = await resp.json()
    times = [datetime.fromisoformat(o["utc"]) for o in preview["occurrences"]]
    assert len(times) == 3
    assert times[1] - times[0] in (
        timedelta(days=7),
        timedelta(days=7, hours=1),
        timedelta(days=6, hours=23),
    )
    assert all(o["local"].endswith(("+01:00", "+02:00")) for o in preview["occurrences"])
    assert all("T09:00:00" in o["local"] for o in preview["occurrences"])

    async with api.get("/v1/schedules", params={"name": "news"}) as resp:
        assert [s["id"] for s in (await resp.json())["items"]] == [created["id"]]
    async with api.get("/v1/schedules", params={"paused": "true"}) as resp:
        assert (await resp.json())["items"] == []
    status, problem = await _post(api, "/v1/schedules", NEWSLETTER)
    assert status == 409
    assert _fields(problem) == ["name"]


NO_PRESET: dict[str, Any] = {"preset": None, "at": None, "weekday": None}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({**NO_PRESET, "cron": "61 * * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at"),
        ({**NO_PRESET, "cron": "0 0 30 2 *"}, "cron"),
        (NO_PRESET, "rule"),
        ({"cron": "* * * * *"}, "rule"),
        ({"task": {"action": "webhook", "payload": {}}}, "task.payload.url"),
        ({"task": {"action": "nope"}}, "task.action"),
        ({"misfire_policy": "sometimes"}, "misfire_policy"),
    ],
)
async def test_invalid_schedules_name_the_field(
    api: aiohttp.ClientSession, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**NEWSLETTER, **change}.items() if v is not None}
    status, problem = await _post(api, "/v1/schedules", body)
    assert status == 422, problem
    assert any(f.startswith(field) for f in _fields(problem)), problem
    status, problem = await _post(api, "/v1/schedules/preview", body)
    assert status == 422


async def test_preview_body_without_saving(api: aiohttp.ClientSession) -> None:
    body = {
        **NEWSLETTER,
        **NO_PRESET,
        "name": "draft",
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "start_at": "2026-03-07T00:00:00-05:00",
    }
    body = {k: v for k, v in body.items() if v is not None}
    async with api.post("/v1/schedules/preview", json=body, params={"count": "3"}) as resp:
        assert resp.status == 200, await resp.text()
        preview = await resp.json()
    assert len(preview["occurrences"]) == 3
    async with api.get("/v1/schedules") as resp:
        assert (await resp.json())["items"] == []


async def test_expander_makes_occurrences_once_with_two_replicas(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    status, created = await _post(
        api,
        "/v1/schedules",
        {
            "name": "every-second",
            "interval_s": 1,
            "task": {"action": "noop"},
        },
    )
    assert status == 201, created
    first, second = expander(pool, horizon_s=1.0), expander(pool, horizon_s=1.0)
    runners = [asyncio.create_task(e.run()) for e in (first, second)]
    try:
        schedule_id = uuid.UUID(created["id"])

        async def eleven() -> bool:
            n = await pool.fetchval(
                "SELECT count(*) FROM tasks WHERE schedule_id = $1", schedule_id
            )
            return bool(n >= 11)

        await eventually(eleven)
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
    rows = await pool.fetch(
        "SELECT scheduled_for, parent_task_id, id FROM tasks WHERE schedule_id = $1 "
        "ORDER BY scheduled_for",
        uuid.UUID(created["id"]),
    )
    times = [r["scheduled_for"] for r in rows]
    assert len(times) == len(set(times))
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {timedelta(seconds=1)}  # none missed, none twice
    assert (first.created > 0 and second.created > 0) or first.created + second.created == len(rows)
    # Each occurrence points at the one before it.
    for before, after in itertools.pairwise(rows):
        assert after["parent_task_id"] == before["id"]


@pytest.mark.parametrize(("policy", "catch_up"), [("skip", 0), ("run_once", 1), ("run_all", 3)])
async def test_resume_after_pause_follows_the_misfire_policy(
    api: aiohttp.ClientSession, pool: asyncpg.Pool, policy: str, catch_up: int
) -> None:
    status, created = await _post(
        api,
        "/v1/schedules",
        {
            "name": f"minutely-{policy}",
            "cron": "* * * * *",
            "task": {"action": "noop"},
            "misfire_policy": policy,
            "max_catchup": 3,
            "misfire_grace_s": 30,
        },
    )
    assert status == 201, created
    schedule_id = uuid.UUID(created["id"])
    status, paused = await _post(api, f"/v1/schedules/{schedule_id}/pause", None)
    assert paused["paused"] is True
    # Pretend the pause began 10 minutes ago: ten occurrences were missed meanwhile.
    await pool.execute(
        "UPDATE schedules SET next_run_at = date_trunc('minute', now()) - interval '10 min' "
        "WHERE id = $1",
        schedule_id,
    )
    status, resumed = await _post(api, f"/v1/schedules/{schedule_id}/resume", None)
    assert resumed["paused"] is False
    await expander(pool).expand_due()
    rows = await pool.fetch(
        "SELECT scheduled_for, run_at, (run_at <= now()) AS now_due FROM tasks "
        "WHERE schedule_id = $1 ORDER BY scheduled_for",
        schedule_id,
    )
    missed = [r for r in rows if r["scheduled_for"] < datetime.now(UTC) - timedelta(seconds=30)]
    assert len(missed) == catch_up
    assert all(r["now_due"] for r in missed)  # catch-up runs are due at once
    if missed:  # the newest missed occurrences are the ones caught up
        newest = max(r["scheduled_for"] for r in missed)
        assert datetime.now(UTC) - newest < timedelta(minutes=1, seconds=31)


async def test_overlap_skip_waits_for_the_previous_occurrence(
    api: aiohttp.ClientSession, pool: asyncpg.Pool, store: PostgresStore
) -> None:
    status, created = await _post(
        api,
        "/v1/schedules",
        {
            "name": "no-overlap",
            "interval_s": 1,
            "task": {"action": "noop"},
            "overlap_policy": "skip",
        },
    )
    assert status == 201, created
    schedule_id = uuid.UUID(created["id"])
    exp = expander(pool)

    async def count() -> int:
        value: int = await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE schedule_id = $1", schedule_id
        )
        return value

    async def first_made() -> bool:
        await exp.expand_due()
        return await count() > 0

    await eventually(first_made, timeout=10)
    # The first occurrence is still scheduled: the next ones are skipped.
    await pool.execute(
        "UPDATE schedules SET expand_at = now(), next_run_at = now() WHERE id = $1", schedule_id
    )
    await exp.expand_due()
    assert await count() == 1


async def test_delete_cancels_pending_and_pause_takes_back(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    _status, created = await _post(
        api,
        "/v1/schedules",
        {
            "name": "soon",
            "interval_s": 1,
            "task": {"action": "noop"},
        },
    )
    schedule_id = uuid.UUID(created["id"])
    await expander(pool, horizon_s=5).expand_due()
    pending = await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE schedule_id = $1 AND status = 'scheduled'", schedule_id
    )
    assert pending >= 4
    await _post(api, f"/v1/schedules/{schedule_id}/pause", None)
    left = await pool.fetchval(
        "SELECT count(*) FROM tasks WHERE schedule_id = $1 AND status = 'scheduled' "
        "AND scheduled_for > now()",
        schedule_id,
    )
    assert left == 0
    await _post(api, f"/v1/schedules/{schedule_id}/resume", None)
    await expander(pool, horizon_s=5).expand_due()
    async with api.delete(f"/v1/schedules/{schedule_id}") as resp:
        assert resp.status == 204
    statuses = await pool.fetch(
        "SELECT DISTINCT status FROM tasks WHERE schedule_id = $1", schedule_id
    )
    assert {r["status"] for r in statuses} <= {"cancelled", "running", "completed"}
    async with api.get(f"/v1/schedules/{schedule_id}") as resp:
        assert resp.status == 404


async def test_patch_renames_and_replaces_the_rule(api: aiohttp.ClientSession) -> None:
    _status, created = await _post(api, "/v1/schedules", NEWSLETTER)
    async with api.patch(
        f"/v1/schedules/{created['id']}", json={"name": "digest", "cron": "0 12 * * *"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        patched = await resp.json()
    assert patched["name"] == "digest"
    assert patched["cron"] == "0 12 * * *"
    assert patched["preset"] is None
    assert patched["weekday"] is None
    assert (
        "T12:00:00"
        in datetime.fromisoformat(patched["next_run_at"])
        .astimezone(__import__("zoneinfo").ZoneInfo("Europe/Oslo"))
        .isoformat()
    )
    async with api.patch(f"/v1/schedules/{created['id']}", json={"timezone": "Nope/Zone"}) as r:
        assert r.status == 422


async def test_task_recurrence_chains_occurrences(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    run_at = (datetime.now(UTC) - timedelta(days=2, seconds=120)).replace(microsecond=0)
    status, task = await _post(
        api,
        "/v1/tasks",
        {
            "action": "noop",
            "run_at": run_at.isoformat(),
            "recurrence": "daily",
        },
    )
    assert status == 201, task
    assert task["schedule_id"] is not None
    await expander(pool).expand_due()
    rows = await pool.fetch(
        "SELECT id, parent_task_id, scheduled_for FROM tasks WHERE schedule_id = $1 "
        "ORDER BY scheduled_for",
        uuid.UUID(task["schedule_id"]),
    )
    assert str(rows[0]["id"]) == task["id"]
    # The missed daily occurrence is caught up once (run_once), chained to the first task.
    assert len(rows) == 2
    assert rows[1]["parent_task_id"] == rows[0]["id"]
    assert rows[1]["scheduled_for"] - rows[0]["scheduled_for"] == timedelta(days=2)
    status, problem = await _post(api, "/v1/tasks", {"action": "noop", "recurrence": "yearly"})
    assert status == 422
    assert _fields(problem) == ["recurrence"]
    # Schedules made by tasks are not listed with the user's schedules.
    async with api.get("/v1/schedules") as resp:
        assert (await resp.json())["items"] == []


def _oslo_fall_back() -> datetime:
    """When Oslo next falls back (03:00 CEST -> 02:00 CET, 01:00Z on October's last Sunday),
    in 2027 or a later year still ahead: previews start from the real clock."""
    year = max(2027, datetime.now(UTC).year + 1)
    last = date(year, 10, 31)
    sunday = last - timedelta(days=(last.weekday() - 6) % 7)
    return datetime(sunday.year, sunday.month, sunday.day, 1, tzinfo=UTC)


async def test_preview_resumes_after_a_blackout_ending_in_the_repeated_hour(
    api: aiohttp.ClientSession,
) -> None:
    # The blackout ends at 02:30 CET, in the second pass of 02:00-03:00: 02:30 and 02:45 ran
    # (skipped) in the first pass, so the next occurrence is 03:00 CET.
    fall_back = _oslo_fall_back()
    minutes = [-60, -45, 60, 75, 90, 105]
    body = {
        "name": "oslo-quarter-hours",
        "cron": "*/15 * * * *",
        "timezone": "Europe/Oslo",
        "start_at": (fall_back - timedelta(hours=1)).isoformat(),
        "exclusions": {
            "windows": [
                {
                    "start": (fall_back - timedelta(minutes=30)).isoformat(),
                    "end": (fall_back + timedelta(minutes=30)).isoformat(),
                }
            ]
        },
        "task": {"action": "noop"},
    }
    async with api.post("/v1/schedules/preview", json=body, params={"count": "6"}) as resp:
        assert resp.status == 200, await resp.text()
        preview = await resp.json()
    times = [datetime.fromisoformat(o["utc"]) for o in preview["occurrences"]]
    assert times == [fall_back + timedelta(minutes=m) for m in minutes]
    day = fall_back.date().isoformat()
    assert [o["local"] for o in preview["occurrences"]] == [
        f"{day}T02:00:00+02:00",
        f"{day}T02:15:00+02:00",
        f"{day}T03:00:00+01:00",
        f"{day}T03:15:00+01:00",
        f"{day}T03:30:00+01:00",
        f"{day}T03:45:00+01:00",
    ]


EVERY_HOUR_EXCLUDED = {
    "daily": [{"start": f"{h:02}:00:00", "end": f"{(h + 1) % 24:02}:00:00"} for h in range(24)]
}


async def test_a_rule_too_costly_to_evaluate_is_refused_naming_the_field(
    api: aiohttp.ClientSession,
) -> None:
    body = {
        "name": "never",
        "cron": "* * * * *",
        "exclusions": EVERY_HOUR_EXCLUDED,
        "task": {"action": "noop"},
    }
    for path in ("/v1/schedules", "/v1/schedules/preview"):
        status, problem = await _post(api, path, body)
        assert status == 422, problem
        assert _fields(problem) == ["exclusions"]
        assert "evaluation steps" in problem["errors"][0]["message"]
    # Once a year (at 03:00 on New York's spring-forward day, the only day 02:30 is not in
    # the window): a short preview is cheap enough, a long one is not.
    yearly = {
        "name": "yearly",
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "exclusions": {"daily": [{"start": "02:30:00", "end": "02:45:00"}]},
        "task": {"action": "noop"},
    }
    async with api.post("/v1/schedules/preview", json=yearly, params={"count": "3"}) as resp:
        assert resp.status == 200, await resp.text()
        locals_ = [o["local"] for o in (await resp.json())["occurrences"]]
    assert len(locals_) == 3
    assert all(t.endswith("T03:00:00-04:00") for t in locals_)
    async with api.post("/v1/schedules/preview", json=yearly, params={"count": "100"}) as resp:
        assert resp.status == 422
        assert _fields(await resp.json()) == ["exclusions"]


async def test_expander_defers_a_schedule_whose_rule_hits_the_bound(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    status, created = await _post(
        api, "/v1/schedules", {"name": "costly", "cron": "* * * * *", "task": {"action": "noop"}}
    )
    assert status == 201, created
    schedule_id = uuid.UUID(created["id"])
    # Exclusions the API would refuse, as a schedule stored earlier could hold them.
    next_run_at = await pool.fetchval(
        "UPDATE schedules SET exclusions = $2::jsonb, expand_at = now() WHERE id = $1 "
        "RETURNING next_run_at",
        schedule_id,
        json.dumps(EVERY_HOUR_EXCLUDED),
    )
    exp = expander(pool)
    await exp.expand_due()  # neither raises nor ends the schedule
    row = await pool.fetchrow(
        "SELECT next_run_at, expand_at - now() AS retry_in FROM schedules WHERE id = $1",
        schedule_id,
    )
    assert row is not None
    assert row["next_run_at"] == next_run_at
    assert row["retry_in"] > timedelta(seconds=LIMITED_RETRY_S - 60)
    tasks = await pool.fetchval("SELECT count(*) FROM tasks WHERE schedule_id = $1", schedule_id)
    assert tasks == 0
