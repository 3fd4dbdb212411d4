from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from scheduler_daemon.store.postgres import PostgresStore, create_pool
from tests.aws import CREDENTIALS, AwsResources, create_resources, moto_server
from tests.pg import PgServer, drop_template, start_server


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[PgServer]:
    server = await start_server()
    try:
        yield server
    finally:
        await drop_template(server)
        await asyncio.to_thread(server.stop)


@pytest.fixture
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    async with pg_server.database() as dsn:
        yield dsn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, 10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> PostgresStore:
    return PostgresStore(pool)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto server on loopback for the whole session (SQS, EventBridge Scheduler)."""
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def aws(moto_endpoint: str) -> AwsResources:
    """A queue, a dead-letter queue and a schedule group of this test's own."""
    return await create_resources(moto_endpoint)
