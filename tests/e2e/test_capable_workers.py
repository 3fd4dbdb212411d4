"""A rolling deploy that adds a handler: the old daemon (without the handler module) leaves the
handler's tasks alone, and the API, GET /v1/queues, GET /v1/stats and /metrics say they wait for
a daemon that can run them; the new daemon, once it starts, runs each of them once."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from scheduler_daemon.enqueue import enqueue
from tests.e2e.conftest import Api, DaemonProcess, StartDaemon

pytestmark = pytest.mark.e2e

HANDLER = "reports.build"
# The handler only the new release has; the daemons run in the test's folder, which handler
# modules are imported from.
MODULE = """
from pydantic import BaseModel

from scheduler_daemon import HandlerContext, handler


class Report(BaseModel):
    n: int


@handler("reports.build", payload=Report)
async def build(ctx: HandlerContext, payload: Report) -> dict[str, int]:
    return {"built": payload.n}
"""


@pytest.mark.timeout(90)
async def test_tasks_of_a_handler_only_the_new_release_has_wait_for_it(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
    database_url: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "reports_handlers.py").write_text(MODULE)
    old = await start_daemon(name="old")
    api = api_for(old)
    # Written by a service that already knows the new handler (transactional enqueue).
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        ids = [
            str(
                await enqueue(
                    conn,
                    HANDLER,
                    {"n": n},
                    run_at=now - timedelta(seconds=1),
                )
            )
            for n in range(3)
        ]
    finally:
        await conn.close()
    # Due after them: once the old daemon ran it, its claims have walked past the others.
    marker = await api.create_task({"action": "noop", "run_at": now.isoformat()})
    await api.wait_for_status(marker["id"], "completed")

    for task_id in ids:
        task = await api.get_task(task_id)
        assert (task["status"], task["attempts"]) == ("scheduled", 0), task
        assert task["no_capable_worker"] is True
    async with http.get(f"{old.base_url}/v1/queues/default") as resp:
        queue = await resp.json()
    assert queue["due_without_worker"] == 3
    assert queue["actions_without_worker"] == [HANDLER]
    async with http.get(f"{old.base_url}/v1/stats") as resp:
        stats = await resp.json()
    assert [(u["action"], u["due"]) for u in stats["no_capable_worker"]] == [(HANDLER, 3)]
    async with http.get(f"{old.base_url}/metrics") as resp:
        text = await resp.text()
    assert f'scheduler_tasks_due_without_worker{{action="{HANDLER}"}} 3.0' in text

    new = await start_daemon({"SCHEDULER_HANDLERS__MODULES": '["reports_handlers"]'}, name="new")
    new_owner = (await new.wait_for_log("daemon_started"))["owner"]
    for task_id in ids:
        done = await api.wait_for_status(task_id, "completed", timeout=30)
        assert (done["attempts"], done["result"]) == (1, {"built": ids.index(task_id)})
        [attempt] = await api.attempts(task_id)
        assert (attempt["outcome"], attempt["worker"]) == ("succeeded", new_owner)
    async with http.get(f"{old.base_url}/v1/queues/default") as resp:
        queue = await resp.json()
    assert queue["due_without_worker"] == 0

    # A daemon that stops takes its row (its actions) away with it; the other's stays.
    new.send_signal(signal.SIGTERM)
    assert await new.wait() == 0
    conn = await asyncpg.connect(database_url)
    try:
        owners = {r["owner"] for r in await conn.fetch("SELECT owner FROM workers")}
    finally:
        await conn.close()
    assert new_owner not in owners
    assert (await old.wait_for_log("daemon_started"))["owner"] in owners
