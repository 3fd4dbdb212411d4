"""Queue limits and pause/resume against real daemon processes: a per-daemon concurrency
limit, a global limit shared by two daemons, and a paused queue that waits for its resume."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import Api, DaemonProcess, StartDaemon
from tests.e2e.test_operations import create_batch

pytestmark = pytest.mark.e2e


class Gauge:
    """A receiver that counts requests in flight per path: it answers only once ``open`` is
    set, so the test sees how many tasks of a queue run at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.inflight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.arrived = asyncio.Condition()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.strip("/")
        async with self.arrived:
            self.inflight[path] += 1
            self.peak[path] = max(self.peak[path], self.inflight[path])
            self.arrived.notify_all()
        try:
            await self.open.wait()
        finally:
            self.inflight[path] -= 1
        self.done[path] += 1
        return web.Response(text="ok")

    async def wait_inflight(self, path: str, n: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: self.inflight[path] >= n)


@contextlib.asynccontextmanager
async def gauge() -> AsyncIterator[Gauge]:
    g = Gauge()
    app = web.Application()
    app.router.add_route("POST", "/{path}", g.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    g.port = runner.addresses[0][1]
    try:
        yield g
    finally:
        g.open.set()
        await runner.cleanup()


def hook(g: Gauge, queue: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": "webhook",
        "payload": {"url": g.url(queue), "method": "POST", "json": {}},
        "queue": queue,
        **extra,
    }


async def queue_state(http: aiohttp.ClientSession, daemon: DaemonProcess, name: str) -> Any:
    async with http.get(f"{daemon.base_url}/v1/queues/{name}") as resp:
        assert resp.status == 200
        return await resp.json()


async def wait_all(api: Api, ids: list[str]) -> None:
    for task_id in ids:
        await api.wait_for_status(task_id, "completed", timeout=60)


async def test_per_daemon_concurrency_limit(
    start_daemon: StartDaemon, http: aiohttp.ClientSession, api_for: Any
) -> None:
    daemon = await start_daemon({"SCHEDULER_QUEUES__MAIL__CONCURRENCY": "2"})
    api: Api = api_for(daemon)
    async with gauge() as g:
        # One batch, all due together: one discovery round sees every task at once.
        ids = await create_batch(
            http, daemon, [hook(g, "mail") for _ in range(6)] + [hook(g, "default")] * 3
        )
        await g.wait_inflight("default", 3)
        await g.wait_inflight("mail", 2)
        # Claimed in the same round as the default tasks: had the limit not held, the other
        # mail tasks would be running now too.
        mail = await queue_state(http, daemon, "mail")
        assert (mail["running"], mail["due"], mail["depth"]) == (2, 4, 4)
        assert mail["limits"]["concurrency"] == 2
        assert mail["oldest_due_age_s"] is not None
        g.open.set()
        await wait_all(api, ids)
    assert g.peak["mail"] == 2
    assert g.done == Counter({"mail": 6, "default": 3})


async def test_global_limit_across_two_daemons(
    start_daemon: StartDaemon, http: aiohttp.ClientSession, api_for: Any
) -> None:
    env = {"SCHEDULER_QUEUES__API__GLOBAL_CONCURRENCY": "2"}
    first = await start_daemon(env, name="first")
    second = await start_daemon(env, name="second")
    async with gauge() as g:
        ids = await create_batch(http, first, [hook(g, "api") for _ in range(8)])
        await g.wait_inflight("api", 2)
        state = await queue_state(http, second, "api")
        assert state["running"] == 2
        assert state["due"] == 6
        g.open.set()
        await wait_all(api_for(first), ids)
    assert g.peak["api"] == 2
    assert g.done["api"] == 8


async def test_paused_queue_waits_for_resume(
    start_daemon: StartDaemon, http: aiohttp.ClientSession, api_for: Any
) -> None:
    daemon = await start_daemon()
    api: Api = api_for(daemon)
    async with http.post(f"{daemon.base_url}/v1/queues/reports/pause") as resp:
        assert resp.status == 200
        assert (await resp.json())["paused"] is True
    async with gauge() as g:
        g.open.set()
        held, free = await create_batch(http, daemon, [hook(g, "reports"), hook(g, "default")])
        # Both were due in the same discovery round; only the unpaused one ran.
        await api.wait_for_status(free, "completed")
        assert (await api.get_task(held))["status"] == "scheduled"
        state = await queue_state(http, daemon, "reports")
        assert (state["paused"], state["due"], state["running"]) == (True, 1, 0)
        async with http.post(f"{daemon.base_url}/v1/queues/reports/resume") as resp:
            assert (await resp.json())["paused"] is False
        await api.wait_for_status(held, "completed")
    assert g.done == Counter({"reports": 1, "default": 1})
    assert daemon.events("queue_paused")[0]["queue"] == "reports"
    assert daemon.events("queue_resumed")[0]["queue"] == "reports"
