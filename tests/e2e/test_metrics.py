"""The real daemon's ``/metrics``: executor gauges, due tasks, attempts by outcome, durations and
lag, as the engine records them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Api, DaemonProcess, StartDaemon, WebhookReceiver

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api) -> Samples:
    async with api.session.get(api.at("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def wait_for_metric(
    api: Api, name: str, expected: float, timeout: float = 15.0, **labels: str
) -> Samples:
    """Scrape every 50 ms until the sample has the expected value (the completer records a
    batch just after its transaction commits, so the API may show the status a moment
    before the counter moves)."""
    samples: Samples = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                samples = await scrape(api)
                if value(samples, name, **labels) == expected:
                    return samples
                await asyncio.sleep(0.05)
    except TimeoutError:
        seen = value(samples, name, **labels)
        raise AssertionError(f"{name}{labels} is {seen}, expected {expected}") from None


def webhook(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    return {
        "action": "webhook",
        "payload": {"url": receiver.url(), "method": "POST", "json": {}},
        "max_attempts": 1,
        **extra,
    }


@pytest.mark.timeout(90)
async def test_engine_metrics(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    daemon = await start_daemon({"SCHEDULER_EXECUTOR__CONCURRENCY": "2"})
    api = api_for(daemon)
    idle = await scrape(api)
    assert value(idle, "scheduler_executor_capacity") == 2
    assert value(idle, "scheduler_executor_busy") == 0
    assert value(idle, "scheduler_tasks_due") == 0
    assert ("scheduler_db_pool_in_use", frozenset()) in idle
    assert total(idle, "scheduler_build_info") == 1

    # Both slots held by webhooks the receiver does not answer yet: due tasks wait.
    receiver.block()
    receiver.status = 500
    held = [await api.create_task(webhook(receiver)) for _ in range(2)]
    await receiver.wait_for_requests(2)
    backdated = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    noops = [await api.create_task({"action": "noop", "payload": {}}) for _ in range(2)]
    noops.append(await api.create_task({"action": "noop", "payload": {}, "run_at": backdated}))
    busy = await scrape(api)
    assert value(busy, "scheduler_executor_busy") == 2
    assert value(busy, "scheduler_tasks_due") == 3
    assert value(busy, "scheduler_tasks_claimed_total", action="webhook", queue="default") == 2
    assert total(busy, "scheduler_tasks_finished_total") == 0

    # Let them answer 500: with one attempt allowed, both fail; then the noops run.
    receiver.unblock()
    for task in held:
        await api.wait_for_status(task["id"], "failed")
    for task in noops:
        await api.wait_for_status(task["id"], "completed")

    # One more that times out against a receiver that never answers.
    receiver.block()
    slow = await api.create_task(webhook(receiver, timeout_s=0.3, queue="slow"))
    await api.wait_for_status(slow["id"], "failed")
    receiver.unblock()

    finished = "scheduler_tasks_finished_total"
    samples = await wait_for_metric(
        api, finished, 1, action="webhook", queue="slow", outcome="timed_out"
    )
    samples = await wait_for_metric(
        api, finished, 3, action="noop", queue="default", outcome="succeeded"
    )
    assert value(samples, finished, action="webhook", queue="default", outcome="failed") == 2
    assert total(samples, finished) == 6

    duration = "scheduler_task_duration_seconds"
    assert value(samples, f"{duration}_count", action="noop") == 3
    assert value(samples, f"{duration}_count", action="webhook") == 3
    # The timed-out attempt took at least its 0.3 s timeout.
    assert value(samples, f"{duration}_bucket", action="webhook", le="0.25") <= 2
    assert value(samples, f"{duration}_sum", action="webhook") >= 0.3

    claimed = "scheduler_tasks_claimed_total"
    assert value(samples, claimed, action="noop", queue="default") == 3
    assert value(samples, claimed, action="webhook", queue="slow") == 1
    lag = "scheduler_task_lag_seconds"
    assert value(samples, f"{lag}_count") == 6
    # Only the task backdated by a minute waited more than ten seconds past its run_at.
    assert value(samples, f"{lag}_count") - value(samples, f"{lag}_bucket", le="10.0") == 1
    assert value(samples, f"{lag}_sum") >= 60

    assert value(samples, "scheduler_tasks_due") == 0
    assert value(samples, "scheduler_executor_busy") == 0
    assert value(samples, "scheduler_http_requests_total", route="/v1/tasks", status="201") == 6
