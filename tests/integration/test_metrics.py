"""``GET /metrics`` of the API app on loopback against a real PostgreSQL: the created counter,
the HTTP counters by route template, the due-task gauge and scraping without a token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from scheduler_daemon.api.app import create_app
from scheduler_daemon.api.context import ApiContext
from scheduler_daemon.app import default_actions
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore, create_pool

WRITE_TOKEN = "metrics-test-write-token-0001"
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


class AlwaysReady:
    async def problems(self) -> list[str]:
        return []


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it is absent (a labelled counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Served:
    session: aiohttp.ClientSession
    metrics: Metrics

    async def scrape(self, headers: Mapping[str, str] | None = None) -> Samples:
        async with self.session.get("/metrics", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return parse(await resp.text())

    async def create(self, body: Mapping[str, Any], status: int = 201) -> dict[str, Any]:
        async with self.session.post("/v1/tasks", json=body, headers=AUTH) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == status, data
            assert isinstance(data, dict)
            return data

    async def create_batch(self, tasks: list[dict[str, Any]], status: int = 201) -> int:
        async with self.session.post(
            "/v1/tasks/batch", json={"tasks": tasks}, headers=AUTH
        ) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == status, data
            created: int = data["created"]
            return created


@pytest.fixture
async def served(store: PostgresStore) -> AsyncIterator[Served]:
    settings = Settings(
        http={"tokens": [{"name": "writer", "token": WRITE_TOKEN, "role": "write"}]}
    )
    metrics = Metrics(version="9.9.9-test")
    metrics.track_due(store.count_due)
    ctx = ApiContext(store, default_actions(), AlwaysReady(), lambda: settings)
    runner = web.AppRunner(create_app(ctx, metrics))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            yield Served(session, metrics)
    finally:
        await runner.cleanup()


def later() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def test_created_counts_new_tasks_not_idempotent_repeats(served: Served) -> None:
    before = await served.scrape()
    noop_a = {"action": "noop", "payload": {}, "queue": "a", "run_at": later()}
    await served.create(noop_a)
    await served.create(noop_a)
    keyed = {**noop_a, "idempotency_key": f"k-{uuid.uuid4()}"}
    await served.create(keyed)
    await served.create(keyed, status=200)  # a repeat: the original task, nothing new
    log = {"action": "log", "payload": {"message": "m"}, "run_at": later()}
    batch_keyed = {**log, "idempotency_key": f"b-{uuid.uuid4()}"}
    assert await served.create_batch([log, batch_keyed, noop_a]) == 3
    assert await served.create_batch([batch_keyed], status=200) == 0
    # Rejected requests create nothing either.
    async with served.session.post(
        "/v1/tasks", json={"action": "nope", "payload": {}}, headers=AUTH
    ) as resp:
        assert resp.status == 422

    after = await served.scrape()
    created = "scheduler_tasks_created_total"

    def delta(**labels: str) -> float:
        return value(after, created, **labels) - value(before, created, **labels)

    assert delta(action="noop", queue="a") == 4
    assert delta(action="log", queue="default") == 2
    assert delta(action="nope", queue="default") == 0
    total = sum(v for (name, _), v in after.items() if name == created)
    assert total == 6
    assert value(after, "scheduler_build_info", version="9.9.9-test") == 1


async def test_http_requests_by_route_template_and_final_status(served: Served) -> None:
    unknown = uuid.uuid4()
    async with served.session.get(f"/v1/tasks/{unknown}", headers=AUTH) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
    async with served.session.get("/v1/tasks/not-a-uuid", headers=AUTH) as resp:
        assert resp.status == 404
    async with served.session.get(f"/no/such/path/{unknown}") as resp:
        assert resp.status == 404
    async with served.session.get("/v1/tasks") as resp:  # no token: a problem response
        assert resp.status == 401
    async with served.session.patch("/v1/tasks", headers=AUTH) as resp:
        assert resp.status == 405
    task = await served.create({"action": "noop", "payload": {}, "run_at": later()})
    async with served.session.get(f"/v1/tasks/{task['id']}", headers=AUTH) as resp:
        assert resp.status == 200

    samples = await served.scrape()
    requests = "scheduler_http_requests_total"
    assert value(samples, requests, route="/v1/tasks/{task_id}", status="404") == 2
    assert value(samples, requests, route="/v1/tasks/{task_id}", status="200") == 1
    assert value(samples, requests, route="/v1/tasks", status="201") == 1
    assert value(samples, requests, route="/v1/tasks", status="401") == 1
    assert value(samples, requests, route="unmatched", status="404") == 1
    assert value(samples, requests, route="unmatched", status="405") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == requests}
    assert routes == {"/v1/tasks/{task_id}", "/v1/tasks", "unmatched"}, routes
    # No raw path (an id) ever becomes a label value.
    assert not any(str(unknown) in v or task["id"] in v for _, ls in samples for _, v in ls)
    duration = "scheduler_http_request_duration_seconds_count"
    assert value(samples, duration, route="/v1/tasks/{task_id}") == 3
    assert value(samples, duration, route="unmatched") == 2

    # This scrape counts too, once its response is out.
    again = await served.scrape()
    assert value(again, requests, route="/metrics", status="200") == 1


async def test_metrics_need_no_token_when_tokens_are_configured(served: Served) -> None:
    async with served.session.get("/v1/tasks") as resp:
        assert resp.status == 401
    async with served.session.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    assert "# TYPE scheduler_tasks_due gauge" in text
    # A wrong token does not matter either.
    await served.scrape(headers={"Authorization": "Bearer wrong-token-wrong-token"})


async def test_tasks_due_counts_due_unclaimed_tasks(served: Served, store: PostgresStore) -> None:
    assert value(await served.scrape(), "scheduler_tasks_due") == 0
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    await served.create({"action": "noop", "payload": {}})  # now
    await served.create({"action": "noop", "payload": {}, "run_at": past})
    await served.create_batch([{"action": "noop", "payload": {}}] * 3)
    await served.create({"action": "noop", "payload": {}, "run_at": later()})  # not due
    cancelled = await served.create({"action": "noop", "payload": {}})
    async with served.session.delete(f"/v1/tasks/{cancelled['id']}", headers=AUTH) as resp:
        assert resp.status == 200
    assert value(await served.scrape(), "scheduler_tasks_due") == 5
    # A claimed task is no longer due.
    claimed = await store.claim("test-owner", 2, 30.0)
    assert len(claimed) == 2
    assert value(await served.scrape(), "scheduler_tasks_due") == 3


async def test_scrape_survives_a_dead_or_hanging_database(
    served: Served, database_url: str
) -> None:
    await served.create_batch([{"action": "noop", "payload": {}}] * 2)
    pool = await create_pool(database_url, 2)
    served.metrics.track_due(PostgresStore(pool).count_due)
    assert value(await served.scrape(), "scheduler_tasks_due") == 2

    pool.terminate()  # every connection gone: the query fails at once
    samples = await served.scrape()
    assert value(samples, "scheduler_tasks_due") == 2  # the previous value stays
    failures = {name for name, _ in samples if "error" in name or "fail" in name}
    assert failures == set()

    never = asyncio.Event()
    given_up = asyncio.Event()

    async def hanging() -> int:
        try:
            await never.wait()
        finally:
            given_up.set()
        return 0

    served.metrics.track_due(hanging)
    served.metrics.due_timeout_s = 0.2
    # The query never answers: the scrape gives up on it after due_timeout_s and answers.
    async with asyncio.timeout(10):  # a safety net, not a measurement
        samples = await served.scrape()
    assert given_up.is_set()
    assert value(samples, "scheduler_tasks_due") == 2
