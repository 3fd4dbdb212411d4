"""Retry policies on the real daemon: a queue's policy from the config file, a task's own cap
on a target's Retry-After, and a completed task free of its earlier attempts' errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.conftest import Api, DaemonProcess, StartDaemon
from tests.integration.serve import eventually

pytestmark = pytest.mark.e2e

CONFIG = """
[queues.flaky.retry]
base_s = 0.05
cap_s = 0.2
"""


@asynccontextmanager
async def answering(*replies: tuple[int, dict[str, str]]) -> AsyncIterator[str]:
    """A loopback target answering each request with the next (status, headers) of
    ``replies``, then 200 for good; its URL."""
    left = list(replies)

    async def handle(_request: web.Request) -> web.Response:
        status, headers = left.pop(0) if left else (200, {})
        return web.Response(status=status, headers=headers, text="reply")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


@pytest.mark.timeout(60)
async def test_a_queue_retry_policy_from_the_config_file_applies_to_its_tasks(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api], tmp_path: Path
) -> None:
    config = tmp_path / "retries.toml"
    config.write_text(CONFIG)
    daemon = await start_daemon({"SCHEDULER_CONFIG": str(config)})
    api = api_for(daemon)
    async with answering((503, {}), (503, {}), (500, {})) as url:
        task = await api.create_task(
            {"action": "webhook", "queue": "flaky", "payload": {"url": url}}
        )
        assert task["max_attempts"] == 22  # the default: the queue sets delays only
        done = await api.wait_for_status(task["id"], "completed")
    outcomes = [a["outcome"] for a in await api.attempts(task["id"])]
    assert outcomes == ["failed", "failed", "failed", "succeeded"]
    assert done["last_error"] is None


@pytest.mark.timeout(60)
async def test_retry_after_sets_the_earliest_next_attempt(
    start_daemon: StartDaemon, api_for: Callable[[DaemonProcess], Api]
) -> None:
    daemon = await start_daemon()
    api = api_for(daemon)
    cases = {  # Retry-After, the task's retry policy, the delay expected
        "later": ("3600", None, (3600.0, 3600.0)),
        "capped": ("999999", None, (86400.0, 86400.0)),  # a Retry-After counts up to a day
        "sooner": ("1", {"base_s": 30}, (24.0, 30.0)),  # never sooner than the backoff
    }
    delays: dict[str, float] = {}
    for name, (header, retry, _) in cases.items():
        async with answering((429, {"Retry-After": header})) as url:
            body: dict[str, Any] = {"action": "webhook", "payload": {"url": url}}
            if retry is not None:
                body["retry"] = retry
            task = await api.create_task(body)
            waiting = await _retrying(api, task["id"])
        [attempt] = await api.attempts(task["id"])
        delays[name] = (
            datetime.fromisoformat(waiting["run_at"])
            - datetime.fromisoformat(attempt["finished_at"])
        ).total_seconds()
        assert "429" in waiting["last_error"]
    for name, (_, _, (low, high)) in cases.items():
        assert low - 0.01 <= delays[name] <= high + 0.01, (name, delays)


async def _retrying(api: Api, task_id: str) -> dict[str, Any]:
    """The task once its first attempt failed and it waits for the retry."""
    found: dict[str, Any] = {}

    async def failed_once() -> bool:
        found.update(await api.get_task(task_id))
        return bool(found["status"] == "scheduled" and found["attempts"] == 1)

    await eventually(failed_once, timeout=30)
    return found
