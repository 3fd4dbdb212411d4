"""Run the API app on loopback against the test's database, with the given settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from scheduler_daemon.api.app import create_app
from scheduler_daemon.api.context import ApiContext
from scheduler_daemon.app import default_actions
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from scheduler_daemon.store.queues import PostgresQueueStore
from scheduler_daemon.store.schedules import PostgresScheduleStore


class AlwaysReady:
    async def problems(self) -> list[str]:
        return []


@asynccontextmanager
async def serve_url(store: PostgresStore, settings: Settings | None = None) -> AsyncIterator[str]:
    """The API app on a free loopback port; its base URL."""
    current = settings or Settings()
    ctx = ApiContext(
        store,
        default_actions(),
        AlwaysReady(),
        lambda: current,
        PostgresScheduleStore(store.pool),
        queues=PostgresQueueStore(store.pool),
    )
    runner = web.AppRunner(create_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_api(
    store: PostgresStore, settings: Settings | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """The same, with a client session bound to it."""
    async with (
        serve_url(store, settings) as url,
        aiohttp.ClientSession(url) as session,
    ):
        yield session


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Wait until ``check()`` holds, looking every ``interval``: for states the database
    reaches in its own time (a schedule's occurrences), with no event to await."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(interval)
