"""A database that cannot be reached is a 503 problem with ``Retry-After`` on every route that
needs it, never a 500: the real app on loopback against a store whose pool points at a port
nothing listens on, a pool that is closed, and a connection the server terminates mid-query.
An error that is not about reaching the database stays a 500."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.api.app import all_routes
from scheduler_daemon.store.errors import is_unavailable
from scheduler_daemon.store.postgres import PostgresStore, create_pool
from tests.e2e.conftest import free_port
from tests.integration.serve import eventually, serve_api

ID = str(uuid.uuid4())
SCHEDULE = {
    "name": "nightly",
    "preset": "daily",
    "at": "03:00",
    "task": {"action": "log", "payload": {"message": "nightly"}},
}

# Every route that reads or writes the database, with a request it accepts up to the query.
DATABASE_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/tasks", {"action": "noop", "delay_s": 600}),
    ("POST", "/v1/tasks/batch", {"tasks": [{"action": "noop"}]}),
    ("GET", "/v1/tasks", None),
    ("GET", f"/v1/tasks/{ID}", None),
    ("DELETE", f"/v1/tasks/{ID}", None),
    ("GET", f"/v1/tasks/{ID}/attempts", None),
    ("POST", f"/v1/tasks/{ID}/run", None),
    ("POST", f"/v1/tasks/{ID}/retry", None),
    ("POST", "/v1/schedules", SCHEDULE),
    ("GET", "/v1/schedules", None),
    ("GET", f"/v1/schedules/{ID}", None),
    ("PATCH", f"/v1/schedules/{ID}", {"paused": True}),
    ("DELETE", f"/v1/schedules/{ID}", None),
    ("POST", f"/v1/schedules/{ID}/pause", None),
    ("POST", f"/v1/schedules/{ID}/resume", None),
    ("GET", f"/v1/schedules/{ID}/preview", None),
    ("GET", f"/v1/schedules/{ID}/tasks", None),
    ("GET", "/v1/dead-letters", None),
    ("POST", "/v1/dead-letters/retry", {"all": True}),
    ("DELETE", "/v1/dead-letters", {"all": True}),
    ("GET", "/v1/stats", None),
    ("GET", "/v1/queues", None),
    ("GET", "/v1/queues/default", None),
    ("POST", "/v1/queues/default/pause", None),
    ("POST", "/v1/queues/default/resume", None),
]
# The routes that answer without the database (the readiness of serve_api is always ready).
NO_DATABASE_REQUESTS: list[tuple[str, str, Any, int]] = [
    ("POST", "/v1/schedules/preview", SCHEDULE, 200),
    ("GET", "/v1/admin/config", None, 200),
    ("GET", "/healthz", None, 200),
    ("GET", "/readyz", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/openapi.json", None, 200),
    ("GET", "/docs", None, 200),
]
STATS_TITLE = "Task counts unavailable"  # /v1/stats says which part failed
TITLE = "Database unavailable"


def _template(path: str) -> str:
    """The route table's path for a request path (IDs and names back to placeholders)."""
    for route in all_routes():
        parts, wanted = route.path.split("/"), path.split("/")
        if len(parts) == len(wanted) and all(
            p == w or p.startswith("{") for p, w in zip(parts, wanted, strict=True)
        ):
            return route.path
    raise AssertionError(f"no route for {path}")


def test_every_route_is_listed() -> None:
    """A new route must say here whether it needs the database."""
    listed = {(m, _template(p)) for m, p, _ in DATABASE_REQUESTS}
    listed |= {(m, _template(p)) for m, p, _, _ in NO_DATABASE_REQUESTS}
    assert listed == {(r.method, r.path) for r in all_routes()}


async def _call(
    api: aiohttp.ClientSession, method: str, path: str, body: Any
) -> tuple[aiohttp.ClientResponse, Any]:
    async with api.request(method, path, json=body) as resp:
        text = await resp.text()
        data: Any = None
        if resp.content_type.endswith("json"):
            data = await resp.json(content_type=None)
        return resp, data if data is not None else text


async def _assert_unavailable(
    api: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    resp, problem = await _call(api, method, path, body)
    assert resp.status == 503, (method, path, resp.status, problem)
    assert resp.content_type == "application/problem+json", (method, path)
    assert int(resp.headers["Retry-After"]) > 0, (method, path)
    assert problem["status"] == 503
    assert problem["title"] == (STATS_TITLE if path == "/v1/stats" else TITLE), problem
    assert problem["instance"] == path


@pytest.fixture
async def refused() -> AsyncIterator[aiohttp.ClientSession]:
    """The app on a store whose every connection attempt is refused (no server on the port)."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/scheduler"
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    try:
        async with serve_api(PostgresStore(pool)) as api:
            yield api
    finally:
        await pool.close()


async def test_every_database_route_is_a_503_when_the_server_refuses(
    refused: aiohttp.ClientSession,
) -> None:
    for method, path, body in DATABASE_REQUESTS:
        await _assert_unavailable(refused, method, path, body)


async def test_routes_without_the_database_still_answer(refused: aiohttp.ClientSession) -> None:
    for method, path, body, status in NO_DATABASE_REQUESTS:
        resp, data = await _call(refused, method, path, body)
        assert resp.status == status, (method, path, resp.status, data)


async def test_the_outage_is_a_warning_without_a_traceback(refused: aiohttp.ClientSession) -> None:
    with capture_logs() as logs:
        for _ in range(5):
            await _assert_unavailable(refused, "GET", "/v1/tasks", None)
    warnings = [r for r in logs if r["event"] == "database_unavailable"]
    assert warnings, logs
    assert all(r["log_level"] == "warning" for r in warnings), warnings
    assert not any("exc_info" in r or "exception" in r for r in logs), logs
    assert not any(r["event"] == "request_failed" for r in logs), logs
    first = warnings[0]
    assert (first["method"], first["path"]) == ("GET", "/v1/tasks")
    assert first["error"].startswith(("ConnectionRefusedError", "OSError")), first
    assert first["suppressed"] == 0
    # Repeats within the same outage are counted on a later line, not logged one by one.
    assert sum(1 + r["suppressed"] for r in warnings) <= 5


async def test_a_closed_pool_is_a_503(database_url: str) -> None:
    pool = await create_pool(database_url, 2)
    await pool.close()  # as while the daemon shuts down
    async with serve_api(PostgresStore(pool)) as api:
        for method, path, body in (
            ("POST", "/v1/tasks", {"action": "noop"}),
            ("GET", "/v1/tasks", None),
            ("GET", "/v1/queues", None),
            ("GET", "/v1/stats", None),
        ):
            await _assert_unavailable(api, method, path, body)


async def _blocked_backend(admin: asyncpg.Connection, database: str) -> int:
    """The pid of the app's backend once it waits for the lock (polled: the server offers no
    notification of a backend starting to wait)."""
    found: list[int] = []

    async def waiting() -> bool:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'scheduler-daemon' AND wait_event_type = 'Lock'",
            database,
        )
        if pid is not None:
            found.append(int(pid))
        return pid is not None

    await eventually(waiting, timeout=10)
    return found[0]


async def test_a_connection_terminated_mid_query_is_a_503_and_the_next_request_works(
    database_url: str, pool: asyncpg.Pool
) -> None:
    admin = await asyncpg.connect(database_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        async with serve_api(PostgresStore(pool)) as api:
            lock = admin.transaction()
            await lock.start()
            await admin.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            request = asyncio.create_task(_call(api, "GET", f"/v1/tasks/{ID}", None))
            pid = await _blocked_backend(admin, database)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            resp, problem = await request
            await lock.rollback()
            assert resp.status == 503, problem
            assert resp.headers["Retry-After"]
            assert problem["title"] == TITLE
            # The pool replaces the connection: the database answers again.
            resp, problem = await _call(api, "GET", f"/v1/tasks/{ID}", None)
            assert resp.status == 404, problem
    finally:
        await admin.close()


async def test_a_database_error_that_is_not_an_outage_stays_a_500(
    database_url: str, store: PostgresStore
) -> None:
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("DROP TABLE queue_pauses CASCADE")  # a schema the code does not expect
    finally:
        await admin.close()
    with capture_logs() as logs:
        async with serve_api(store) as api:
            resp, problem = await _call(api, "GET", "/v1/queues", None)
    assert resp.status == 500, problem
    assert problem["title"] == "Internal error"
    assert "Retry-After" not in resp.headers
    assert [r["log_level"] for r in logs if r["event"] == "request_failed"] == ["error"]


async def test_real_outage_errors_are_recognised(database_url: str) -> None:
    """The exceptions asyncpg really raises, as ``is_unavailable`` sees them."""
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert is_unavailable(refused.value)

    conn = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError) as syntax:
            await conn.execute("SELEC 1")
        assert not is_unavailable(syntax.value)
        with pytest.raises(asyncpg.PostgresError) as missing:
            await conn.execute("SELECT * FROM no_such_table")
        assert not is_unavailable(missing.value)

        pid = await conn.fetchval("SELECT pg_backend_pid()")
        terminated = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))

        async def sleeping() -> bool:
            active: int = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
            )
            return active > 0

        await eventually(sleeping, timeout=10)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as broken:
            await terminated
        assert is_unavailable(broken.value), repr(broken.value)
        with pytest.raises(asyncpg.InterfaceError) as closed:
            await conn.fetchval("SELECT 1")
        assert is_unavailable(closed.value), repr(closed.value)
    finally:
        await conn.close()
        await admin.close()

    # What a pooled connection raises when the server ended its session while it sat idle
    # (seen in a fast shutdown), against a protocol bug.
    broken_state = "cannot switch to state 12; another operation (2) is in progress"
    assert is_unavailable(asyncpg.InternalClientError(broken_state))
    assert not is_unavailable(asyncpg.InternalClientError("no binary format encoder for type x"))
    assert not is_unavailable(ValueError("not a database error"))
    assert is_unavailable(ExceptionGroup("both", [TimeoutError(), ConnectionResetError()]))
    assert not is_unavailable(ExceptionGroup("mixed", [TimeoutError(), KeyError("x")]))
