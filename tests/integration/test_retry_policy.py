"""Retry policies over HTTP and in PostgreSQL: per task, per schedule template and per queue;
a claimed task carries its own delays; a completed task shows no earlier attempt's error."""

from __future__ import annotations

from typing import Any

import aiohttp

from scheduler_daemon.domain.models import AttemptResult, NewTask, Outcome, TaskStatus
from scheduler_daemon.settings import QueueLimits, QueueRetry, Settings
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api


async def _post(api: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with api.post(path, json=body) as resp:
        return resp.status, await resp.json()


def _fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem.get("errors", [])]


SETTINGS = Settings(queues={"mail": QueueLimits(retry=QueueRetry(max_attempts=4))})


async def test_a_task_keeps_its_retry_policy_and_its_claim_carries_it(
    store: PostgresStore,
) -> None:
    async with serve_api(store, SETTINGS) as api:
        status, task = await _post(
            api,
            "/v1/tasks",
            {"action": "noop", "retry": {"max_attempts": 7, "base_s": 2.5, "cap_s": 90}},
        )
        assert status == 201, task
        assert (task["max_attempts"], task["retry_base_s"], task["retry_cap_s"]) == (7, 2.5, 90)
        status, plain = await _post(api, "/v1/tasks", {"action": "noop", "delay_s": 600})
        assert (plain["max_attempts"], plain["retry_base_s"], plain["retry_cap_s"]) == (
            SETTINGS.retry.max_attempts,
            None,
            None,
        )
        # A queue's max_attempts applies to its tasks that do not set one.
        status, mail = await _post(api, "/v1/tasks", {"action": "noop", "queue": "mail"})
        assert mail["max_attempts"] == 4
    [claimed] = [t for t in await store.claim("me", 10, 30.0) if str(t.id) == task["id"]]
    assert (claimed.max_attempts, claimed.retry_base_s, claimed.retry_cap_s) == (7, 2.5, 90.0)


async def test_bad_retry_policies_are_refused_naming_the_field(store: PostgresStore) -> None:
    async with serve_api(store) as api:
        for retry, field in [
            ({"base_s": 0}, "retry.base_s"),
            ({"cap_s": -1}, "retry.cap_s"),
            ({"max_attempts": 0}, "retry.max_attempts"),
            ({"base_s": 60, "cap_s": 10}, "retry"),
            ({"factor": 3}, "retry.factor"),
        ]:
            status, problem = await _post(api, "/v1/tasks", {"action": "noop", "retry": retry})
            assert status == 422, (retry, problem)
            assert field in _fields(problem), (retry, problem)
        status, problem = await _post(
            api, "/v1/tasks", {"action": "noop", "max_attempts": 3, "retry": {"max_attempts": 4}}
        )
        assert status == 422
        assert "max_attempts or retry.max_attempts" in problem["detail"]


async def test_a_schedule_template_retry_policy_reaches_its_occurrences(
    store: PostgresStore,
) -> None:
    async with serve_api(store) as api:
        status, schedule = await _post(
            api,
            "/v1/schedules",
            {
                "name": "nightly",
                "cron": "0 3 * * *",
                "task": {"action": "noop", "retry": {"max_attempts": 9, "cap_s": 600}},
            },
        )
        assert status == 201, schedule
        assert schedule["task"]["max_attempts"] == 9
        assert schedule["task"]["retry_cap_s"] == 600
        assert schedule["task"]["retry_base_s"] is None
        async with api.get(f"/v1/schedules/{schedule['id']}") as resp:
            again = await resp.json()
        assert again["task"]["retry_cap_s"] == 600


async def test_a_task_completed_after_a_failure_shows_no_last_error(
    store: PostgresStore,
) -> None:
    [(task, _)] = await store.create_tasks([NewTask(action="noop", payload={})])
    [first] = await store.claim("me", 1, 30.0)
    failed = AttemptResult(
        first.id, first.attempt, Outcome.FAILED, TaskStatus.SCHEDULED, 0.0, error="HTTP 503"
    )
    assert await store.complete("me", [failed]) == {task.id}
    retrying = await store.get_task(task.id)
    assert retrying is not None
    assert (retrying.status, retrying.last_error) == (TaskStatus.SCHEDULED, "HTTP 503")
    [second] = await store.claim("me", 1, 30.0)
    ok = AttemptResult(second.id, second.attempt, Outcome.SUCCEEDED, TaskStatus.COMPLETED)
    assert await store.complete("me", [ok]) == {task.id}
    done = await store.get_task(task.id)
    assert done is not None
    assert (done.status, done.last_error) == (TaskStatus.COMPLETED, None)
    # The earlier attempt's error is kept where it belongs.
    attempts = await store.list_attempts(task.id)
    assert [(a.outcome, a.error) for a in attempts] == [
        (Outcome.FAILED, "HTTP 503"),
        (Outcome.SUCCEEDED, None),
    ]
