"""Batch create, run now, retry, filters, idempotency, dependencies and limits over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from scheduler_daemon.domain.models import AttemptResult, Outcome, TaskStatus
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    settings = Settings(http={"payload_limit_bytes": 1024, "body_limit_bytes": 2_000_000})
    async with serve_api(store, settings) as session:
        yield session


async def _post(
    api: aiohttp.ClientSession, path: str, body: Any, **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with api.post(path, json=body, **kw) as resp:
        return resp.status, await resp.json()


def _fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem.get("errors", [])]


async def test_batch_creates_all_in_order(api: aiohttp.ClientSession, store: PostgresStore) -> None:
    tasks = [{"action": "noop", "delay_s": 600, "priority": i} for i in range(5)]
    status, body = await _post(api, "/v1/tasks/batch", {"tasks": tasks})
    assert status == 201
    assert body["created"] == 5
    assert [t["priority"] for t in body["items"]] == [0, 1, 2, 3, 4]
    for item in body["items"]:
        assert await store.get_task(uuid.UUID(item["id"])) is not None


async def test_batch_is_all_or_nothing_with_per_item_errors(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    tasks = [
        {"action": "noop"},
        {"action": "webhook", "payload": {"url": "ftp://x"}},
        {"action": "noop", "run_at": "2030-01-01T00:00:00"},
        {"action": "nope"},
    ]
    status, problem = await _post(api, "/v1/tasks/batch", {"tasks": tasks})
    assert status == 422
    fields = _fields(problem)
    assert "tasks[1].payload.url" in fields
    assert any(f.startswith("tasks[2].run_at") for f in fields)
    assert "tasks[3].action" in fields
    assert not any(f.startswith("tasks[0]") for f in fields)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0


async def test_batch_limits(api: aiohttp.ClientSession) -> None:
    status, problem = await _post(api, "/v1/tasks/batch", {"tasks": []})
    assert status == 422
    assert _fields(problem) == ["tasks"]
    too_many = {"tasks": [{"action": "noop"}] * 1001}
    status, problem = await _post(api, "/v1/tasks/batch", too_many)
    assert status == 422
    assert _fields(problem) == ["tasks"]


async def test_batch_of_a_thousand(api: aiohttp.ClientSession, pool: asyncpg.Pool) -> None:
    tasks = [
        {"action": "log", "payload": {"message": f"m{i}"}, "delay_s": 600} for i in range(1000)
    ]
    status, body = await _post(api, "/v1/tasks/batch", {"tasks": tasks})
    assert status == 201
    assert body["created"] == 1000
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1000


async def test_idempotency_same_body_200_different_body_409(api: aiohttp.ClientSession) -> None:
    body = {"action": "noop", "delay_s": 600, "idempotency_key": "k-1"}
    status, first = await _post(api, "/v1/tasks", body)
    assert status == 201
    status, again = await _post(api, "/v1/tasks", body)
    assert status == 200
    assert again["id"] == first["id"]
    status, problem = await _post(api, "/v1/tasks", {**body, "priority": 5})
    assert status == 409
    assert _fields(problem) == ["idempotency_key"]
    # The header form is the same key.
    status, via_header = await _post(
        api, "/v1/tasks", {"action": "noop", "delay_s": 600}, headers={"Idempotency-Key": "k-1"}
    )
    assert status == 200
    assert via_header["id"] == first["id"]


async def test_batch_idempotency_conflict_rolls_back(
    api: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    await _post(api, "/v1/tasks", {"action": "noop", "idempotency_key": "dup", "delay_s": 5})
    tasks = [{"action": "noop"}, {"action": "log", "idempotency_key": "dup"}]
    status, problem = await _post(api, "/v1/tasks/batch", {"tasks": tasks})
    assert status == 409
    assert _fields(problem) == ["tasks[1].idempotency_key"]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_payload_and_string_limits(api: aiohttp.ClientSession) -> None:
    big = {"action": "noop", "payload": {"blob": "x" * 2000}}
    status, problem = await _post(api, "/v1/tasks", big)
    assert status == 422
    assert _fields(problem) == ["payload"]
    status, problem = await _post(api, "/v1/tasks", {"action": "noop", "queue": "q" * 101})
    assert status == 422
    assert _fields(problem) == ["queue"]
    status, problem = await _post(api, "/v1/tasks", {"action": "a" * 101})
    assert status == 422
    assert _fields(problem) == ["action"]


async def test_run_now(api: aiohttp.ClientSession, store: PostgresStore) -> None:
    _, task = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 3600})
    status, ran = await _post(api, f"/v1/tasks/{task['id']}/run", None)
    assert status == 200
    assert datetime.fromisoformat(ran["run_at"]) < datetime.fromisoformat(task["run_at"])
    [claimed] = await store.claim("me", 10, 30.0)
    assert str(claimed.id) == task["id"]
    status, problem = await _post(api, f"/v1/tasks/{task['id']}/run", None)
    assert status == 409
    assert "running" in problem["detail"]
    status, _ = await _post(api, f"/v1/tasks/{uuid.uuid4()}/run", None)
    assert status == 404


async def test_retry_starts_a_new_attempt_series(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    _, task = await _post(api, "/v1/tasks", {"action": "noop", "max_attempts": 1})
    task_id = uuid.UUID(task["id"])
    status, problem = await _post(api, f"/v1/tasks/{task_id}/retry", None)
    assert status == 409  # scheduled tasks are not retried
    assert _fields(problem) == ["status"]
    [claimed] = await store.claim("me", 1, 30.0)
    failed = AttemptResult(
        task_id, claimed.attempt, Outcome.FAILED, TaskStatus.FAILED, error="boom"
    )
    assert await store.complete("me", [failed]) == {task_id}

    status, retried = await _post(api, f"/v1/tasks/{task_id}/retry", None)
    assert status == 200
    assert retried["status"] == "scheduled"
    assert retried["last_error"] is None
    [again] = await store.claim("me", 1, 30.0)
    assert again.attempt == 2
    assert again.series_attempt == 1  # a fresh series: max_attempts counts again
    ok = AttemptResult(task_id, again.attempt, Outcome.SUCCEEDED, TaskStatus.COMPLETED)
    assert await store.complete("me", [ok]) == {task_id}
    attempts = [(a.number, a.outcome) for a in await store.list_attempts(task_id)]
    assert attempts == [(1, Outcome.FAILED), (2, Outcome.SUCCEEDED)]


async def test_retry_a_cancelled_task(api: aiohttp.ClientSession) -> None:
    _, task = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 3600})
    async with api.delete(f"/v1/tasks/{task['id']}") as resp:
        assert resp.status == 200
    status, retried = await _post(api, f"/v1/tasks/{task['id']}/retry", None)
    assert status == 200
    assert retried["status"] == "scheduled"
    assert retried["finished_at"] is None


async def test_list_filters(api: aiohttp.ClientSession, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    bodies = [
        {"action": "noop", "queue": "emails", "run_at": (now + timedelta(hours=1)).isoformat()},
        {"action": "noop", "queue": "emails", "run_at": (now + timedelta(hours=3)).isoformat()},
        {"action": "log", "queue": "reports", "run_at": (now + timedelta(hours=2)).isoformat()},
    ]
    ids = []
    for body in bodies:
        _, task = await _post(api, "/v1/tasks", body)
        ids.append(task["id"])

    async def listed(**params: str) -> list[str]:
        async with api.get("/v1/tasks", params=params) as resp:
            assert resp.status == 200, await resp.text()
            return [t["id"] for t in (await resp.json())["items"]]

    assert await listed(queue="emails") == [ids[1], ids[0]]
    assert await listed(action="log") == [ids[2]]
    assert await listed(run_after=(now + timedelta(minutes=90)).isoformat()) == [ids[2], ids[1]]
    assert await listed(run_before=(now + timedelta(minutes=90)).isoformat()) == [ids[0]]
    # An unencoded '+' in the offset arrives as a space; it is understood all the same.
    raw = (now + timedelta(minutes=150)).isoformat().replace("+00:00", " 00:00")
    assert await listed(run_after=raw) == [ids[1]]
    created = await pool.fetchval("SELECT created_at FROM tasks WHERE id = $1", uuid.UUID(ids[1]))
    assert await listed(created_before=created.isoformat()) == [ids[0]]
    assert await listed(created_after=created.isoformat()) == [ids[2], ids[1]]
    assert await listed(status="scheduled,running", queue="reports") == [ids[2]]
    assert await listed(schedule_id=str(uuid.uuid4())) == []
    assert await listed(status="") == [ids[2], ids[1], ids[0]]  # seed 001's bare ?status=
    async with api.get("/v1/tasks", params={"run_after": "yesterday"}) as resp:
        assert resp.status == 422
        assert _fields(await resp.json()) == ["run_after"]
    async with api.get("/v1/tasks", params={"bogus": "1"}) as resp:
        assert resp.status == 422
        assert _fields(await resp.json()) == ["bogus"]


async def test_dependencies_wait_then_run(api: aiohttp.ClientSession, store: PostgresStore) -> None:
    _, a = await _post(api, "/v1/tasks", {"action": "noop"})
    _, b = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 3600})
    status, c = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": [a["id"], b["id"]]})
    assert status == 201
    assert c["status"] == "waiting"
    assert c["depends_on"] == [a["id"], b["id"]]

    [claimed_a] = await store.claim("me", 5, 30.0)
    assert str(claimed_a.id) == a["id"]  # c waits, b is not due
    done = AttemptResult(claimed_a.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED)
    await store.complete("me", [done])
    still = await store.get_task(uuid.UUID(c["id"]))
    assert still is not None
    assert still.status is TaskStatus.WAITING  # b has not completed yet

    await _post(api, f"/v1/tasks/{b['id']}/run", None)
    [claimed_b] = await store.claim("me", 5, 30.0)
    assert str(claimed_b.id) == b["id"]
    await store.complete(
        "me", [AttemptResult(claimed_b.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED)]
    )
    released = await store.get_task(uuid.UUID(c["id"]))
    assert released is not None
    assert released.status is TaskStatus.SCHEDULED
    [claimed_c] = await store.claim("me", 5, 30.0)
    assert str(claimed_c.id) == c["id"]


async def test_dependency_failure_cancels_dependents_transitively(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    _, a = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 3600})
    _, b = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": [a["id"]]})
    _, c = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": [b["id"]]})
    async with api.delete(f"/v1/tasks/{a['id']}") as resp:
        assert resp.status == 200
    for task, cause in ((b, a), (c, b)):
        row = await store.get_task(uuid.UUID(task["id"]))
        assert row is not None
        assert row.status is TaskStatus.CANCELLED
        assert row.last_error == f"dependency {cause['id']} cancelled"
    # A new dependent of a cancelled task is cancelled at once, with the reason.
    status, d = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": [a["id"]]})
    assert status == 201
    assert d["status"] == "cancelled"
    assert d["last_error"] == f"dependency {a['id']} cancelled"


async def test_dependency_on_completed_task_is_scheduled_and_unknown_is_422(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    _, a = await _post(api, "/v1/tasks", {"action": "noop"})
    [claimed] = await store.claim("me", 1, 30.0)
    await store.complete(
        "me", [AttemptResult(claimed.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED)]
    )
    status, b = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": [a["id"]]})
    assert status == 201
    assert b["status"] == "scheduled"
    status, problem = await _post(
        api, "/v1/tasks", {"action": "noop", "depends_on": [str(uuid.uuid4())]}
    )
    assert status == 422
    assert _fields(problem) == ["depends_on"]


async def test_concurrent_completions_release_the_dependent_once(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    parents = []
    for _ in range(6):
        _, p = await _post(api, "/v1/tasks", {"action": "noop"})
        parents.append(p["id"])
    _, child = await _post(api, "/v1/tasks", {"action": "noop", "depends_on": parents})
    claimed = await store.claim("me", 10, 30.0)
    assert len(claimed) == 6
    # Every parent completes in its own transaction, all at once.
    await asyncio.gather(
        *(
            store.complete("me", [AttemptResult(c.id, 1, Outcome.SUCCEEDED, TaskStatus.COMPLETED)])
            for c in claimed
        )
    )
    row = await store.get_task(uuid.UUID(child["id"]))
    assert row is not None
    assert row.status is TaskStatus.SCHEDULED


async def test_unstorable_values_are_422_not_500(api: aiohttp.ClientSession) -> None:
    cases = [
        ({"action": "noop", "run_at": "0001-01-01T00:10:00+05:00"}, "run_at"),
        ({"action": "noop", "payload": {"a": "x\u0000y"}}, "payload"),
        ({"action": "noop", "metadata": {"\u0000": 1}}, "metadata"),
        ({"action": "noop", "payload": {"a": "\ud810"}}, "payload"),
        ({"action": "noop", "idempotency_key": "a\u0000"}, "idempotency_key"),
    ]
    for body, field in cases:
        status, problem = await _post(api, "/v1/tasks", body)
        assert status == 422, body
        assert any(f.startswith(field) for f in _fields(problem)), (body, problem)
    # An escaped backslash before "u0000" is ordinary text, and stored.
    status, task = await _post(api, "/v1/tasks", {"action": "noop", "payload": {"a": "\\u0000"}})
    assert status == 201
    assert task["payload"] == {"a": "\\u0000"}
    # NaN and Infinity are not JSON.
    async with api.post("/v1/tasks", data=b'{"action": "noop", "payload": {"a": NaN}}') as resp:
        assert resp.status == 400


async def test_a_webhook_signing_secret_is_never_shown_again(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    status, created = await _post(
        api,
        "/v1/tasks",
        {
            "action": "webhook",
            "payload": {"url": "https://example.com/hook", "signing_secret": secret},
            "delay_s": 3600,
        },
    )
    assert status == 201, created
    assert created["payload"]["signing_secret"] == "***"
    async with api.get(f"/v1/tasks/{created['id']}") as resp:
        shown = await resp.text()
    async with api.get("/v1/tasks") as resp:
        listed = await resp.text()
    assert secret not in shown
    assert secret not in listed
    stored = await store.get_task(uuid.UUID(created["id"]))
    assert stored is not None
    assert stored.payload["signing_secret"] == secret  # kept for signing


async def _listed(api: aiohttp.ClientSession, **params: str) -> list[str]:
    async with api.get("/v1/tasks", params=params) as resp:
        assert resp.status == 200, await resp.text()
        return [t["id"] for t in (await resp.json())["items"]]


async def test_search_by_id_or_idempotency_key(api: aiohttp.ClientSession) -> None:
    keys = ["order-17", "order-170", "order-2", "orDer-17", "50%off", "500", "a_b", "axb"]
    ids: dict[str, str] = {}
    for key in keys:
        status, task = await _post(
            api, "/v1/tasks", {"action": "noop", "delay_s": 600, "idempotency_key": key}
        )
        assert status == 201, task
        ids[key] = task["id"]
    _, keyless = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 600})

    def of(*names: str) -> list[str]:
        return [ids[n] for n in reversed(keys) if n in names]  # newest first

    assert await _listed(api, q="order-17") == of("order-17", "order-170")  # exact and prefix
    assert await _listed(api, q="order-170") == of("order-170")
    assert await _listed(api, q="order-") == of("order-17", "order-170", "order-2")
    assert await _listed(api, q="orDer") == of("orDer-17")  # case matters
    assert await _listed(api, q="order-3") == []
    # % and _ are plain characters, not wildcards.
    assert await _listed(api, q="50%") == of("50%off")
    assert await _listed(api, q="a_") == of("a_b")
    assert await _listed(api, q="%") == []
    # A UUID finds the task with that id, whatever its key (or none).
    assert await _listed(api, q=keyless["id"]) == [keyless["id"]]
    assert await _listed(api, q=ids["a_b"].upper()) == [ids["a_b"]]
    assert await _listed(api, q=str(uuid.uuid4())) == []
    # An empty q is no search at all.
    assert len(await _listed(api, q="")) == len(keys) + 1


async def test_search_by_prefix_beyond_ascii(api: aiohttp.ClientSession) -> None:
    """The index range ends at the prefix's successor in code point order: checked at the
    edges (the last code point before the surrogates, the last one of all)."""
    keys = ["ключ-1", "ключ-2", "клюв", "x\ud7ff1", "x\ue000", "y\U0010ffffz", "z", "🙂-a"]
    ids = {}
    for key in keys:
        _, task = await _post(
            api, "/v1/tasks", {"action": "noop", "delay_s": 600, "idempotency_key": key}
        )
        ids[key] = task["id"]
    assert await _listed(api, q="ключ-") == [ids["ключ-2"], ids["ключ-1"]]
    assert await _listed(api, q="клю") == [ids["клюв"], ids["ключ-2"], ids["ключ-1"]]
    assert await _listed(api, q="x\ud7ff") == [ids["x\ud7ff1"]]
    assert await _listed(api, q="y\U0010ffff") == [ids["y\U0010ffffz"]]
    assert await _listed(api, q="🙂") == [ids["🙂-a"]]


async def test_search_finds_a_key_that_is_a_uuid(api: aiohttp.ClientSession) -> None:
    key = str(uuid.uuid4())
    _, keyed = await _post(
        api, "/v1/tasks", {"action": "noop", "delay_s": 600, "idempotency_key": key}
    )
    assert keyed["id"] != key
    assert await _listed(api, q=key) == [keyed["id"]]


async def test_search_combines_with_filters_and_the_cursor(api: aiohttp.ClientSession) -> None:
    ids = []
    for i in range(5):
        body = {"action": "noop", "delay_s": 600, "idempotency_key": f"batch-7-{i}"}
        body["queue"] = "emails" if i % 2 == 0 else "reports"
        _, task = await _post(api, "/v1/tasks", body)
        ids.append(task["id"])
    await _post(api, "/v1/tasks", {"action": "noop", "idempotency_key": "batch-8-0"})
    async with api.delete(f"/v1/tasks/{ids[4]}") as resp:
        assert resp.status == 200

    assert await _listed(api, q="batch-7", queue="emails") == [ids[4], ids[2], ids[0]]
    assert await _listed(api, q="batch-7", queue="emails", status="scheduled") == [
        ids[2],
        ids[0],
    ]
    pages: list[str] = []
    params = {"q": "batch-7-", "limit": "2"}
    while True:
        async with api.get("/v1/tasks", params=params) as resp:
            assert resp.status == 200
            page = await resp.json()
        pages.extend(t["id"] for t in page["items"])
        if page["next_cursor"] is None:
            break
        params = {"q": "batch-7-", "limit": "2", "cursor": page["next_cursor"]}
    assert pages == list(reversed(ids))


async def test_search_rejects_what_no_key_can_be(api: aiohttp.ClientSession) -> None:
    for bad in ("x" * 201, "a\x00b"):
        async with api.get("/v1/tasks", params={"q": bad}) as resp:
            assert resp.status == 422
            assert _fields(await resp.json()) == ["q"]
    # Bytes that are no UTF-8 (here a lone surrogate) arrive as U+FFFD: searched, not a 500.
    async with api.get("/v1/tasks?q=%ED%A0%80") as resp:
        assert resp.status == 200
        assert (await resp.json())["items"] == []


async def test_list_by_schedule_id(api: aiohttp.ClientSession) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _, first = await _post(
        api, "/v1/tasks", {"action": "noop", "run_at": run_at, "recurrence": "daily"}
    )
    assert first["schedule_id"] is not None
    _, other = await _post(
        api, "/v1/tasks", {"action": "noop", "run_at": run_at, "recurrence": "weekly"}
    )
    await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 60})
    assert await _listed(api, schedule_id=first["schedule_id"]) == [first["id"]]
    assert await _listed(api, schedule_id=other["schedule_id"]) == [other["id"]]
    async with api.get("/v1/tasks", params={"schedule_id": "nope"}) as resp:
        assert resp.status == 422
        assert _fields(await resp.json()) == ["schedule_id"]


def _webhook(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "action": "webhook",
        "payload": {"url": "https://example.com/hook", "headers": headers},
        "delay_s": 3600,
    }


async def test_webhook_credentials_in_headers_are_masked(
    api: aiohttp.ClientSession, store: PostgresStore
) -> None:
    headers = {
        "Authorization": "Bearer tok-123456",
        "X-API-Key": "key-987654",
        "Cookie": "session=abcdef",
        "X-Request-Source": "billing",
    }
    status, created = await _post(api, "/v1/tasks", _webhook(headers))
    assert status == 201, created
    expected = {
        "Authorization": "***",
        "X-API-Key": "***",
        "Cookie": "***",
        "X-Request-Source": "billing",
    }
    assert created["payload"]["headers"] == expected
    async with api.get(f"/v1/tasks/{created['id']}") as resp:
        shown = await resp.json()
    assert shown["payload"]["headers"] == expected
    assert shown["payload"]["url"] == "https://example.com/hook"
    async with api.get("/v1/tasks", params={"action": "webhook"}) as resp:
        listed = await resp.text()
    _, batch = await _post(api, "/v1/tasks/batch", {"tasks": [_webhook(headers)]})
    for text in (str(created), str(shown), listed, str(batch)):
        for secret in ("tok-123456", "key-987654", "abcdef"):
            assert secret not in text
    stored = await store.get_task(uuid.UUID(created["id"]))
    assert stored is not None
    assert stored.payload["headers"] == headers  # stored as sent: the webhook needs them


async def test_masked_headers_follow_log_redact_headers(store: PostgresStore) -> None:
    settings = Settings(log={"redact_headers": ["x-tenant-secret"]})
    async with serve_api(store, settings) as api:
        _, created = await _post(
            api, "/v1/tasks", _webhook({"X-Tenant-Secret": "s-1", "Authorization": "Basic x"})
        )
        async with api.get(f"/v1/tasks/{created['id']}") as resp:
            shown = await resp.json()
    assert shown["payload"]["headers"] == {"X-Tenant-Secret": "***", "Authorization": "Basic x"}


async def test_headers_of_other_actions_are_shown_as_stored(api: aiohttp.ClientSession) -> None:
    _, created = await _post(
        api,
        "/v1/tasks",
        {"action": "log", "payload": {"message": "m", "level": "info"}, "delay_s": 60},
    )
    assert created["payload"] == {"message": "m", "level": "info"}
