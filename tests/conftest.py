from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from scheduler_daemon.store.postgres import PostgresStore, create_pool
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
