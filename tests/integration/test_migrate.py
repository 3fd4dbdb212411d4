"""Migrations: applied once, under an advisory lock, even when daemons start together."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from scheduler_daemon.store.migrate import load_migrations, migrate
from tests.pg import PgServer, with_database


async def test_concurrent_migrations_apply_each_version_once(pg_server: PgServer) -> None:
    name = f"sd_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(pg_server.admin_dsn, name)
    try:
        conns = [await asyncpg.connect(dsn) for _ in range(4)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            expected = [m.version for m in load_migrations()]
            # Exactly one of the racers applied everything; the others found it done.
            assert sorted(results, key=len) == [[], [], [], expected]
            rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY 1")
            assert [r["version"] for r in rows] == expected
            assert await migrate(conns[0]) == []
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def test_migrations_are_numbered_and_packaged() -> None:
    migrations = load_migrations()
    assert migrations
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.sql.strip() for m in migrations)
