"""Handlers that block, in two real daemon processes sharing one database.

A handler that blocks the event loop must not cost unrelated tasks their leases (the leases are
renewed from the lease keeper's own thread), the daemon names the task that blocked its loop,
plain ``def`` handlers run in threads, and ``isolation="process"`` handlers run in a child
process that is killed at the task's timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import (
    FAST_RETRIES,
    POLL_INTERVAL_S,
    Api,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    webhook,
)

pytestmark = pytest.mark.e2e

LEASE_S = "4"
BLOCK_S = 3.0
BLOCKING_TASKS = 4
UNRELATED_TASKS = 100

# An async handler that calls a blocking function: it holds the daemon's event loop.
BLOCKING_MODULE = """
import time

from pydantic import BaseModel

from scheduler_daemon import handler


class Sleep(BaseModel):
    seconds: float


@handler("blocking.sleep", payload=Sleep)
async def block_the_loop(ctx, payload: Sleep) -> dict:
    time.sleep(payload.seconds)
    return {"slept": payload.seconds}
"""

# A plain def handler: it runs in a thread of its own, the loop stays free.
SYNC_MODULE = """
import threading
import time

from pydantic import BaseModel

from scheduler_daemon import handler


class Sleep(BaseModel):
    seconds: float


@handler("sync.sleep", payload=Sleep)
def sleep_in_a_thread(ctx, payload: Sleep) -> dict:
    time.sleep(payload.seconds)
    return {
        "slept": payload.seconds,
        "attempt": ctx.attempt,
        "thread": threading.current_thread().name,
    }
"""

# Handlers that run in a child process each attempt.
PROCESS_MODULE = """
import asyncio
import os
import signal
from pathlib import Path

from pydantic import BaseModel

from scheduler_daemon import handler


class Empty(BaseModel):
    pass


class Hang(BaseModel):
    pid_file: str


@handler("isolated.pid", payload=Empty, isolation="process")
def report_pid(ctx, payload: Empty) -> dict:
    return {"pid": os.getpid(), "task_id": str(ctx.task_id), "attempt": ctx.attempt}


@handler("isolated.exit", payload=Empty, isolation="process")
def exit_hard(ctx, payload: Empty) -> None:
    os._exit(3)


@handler("isolated.kill", payload=Empty, isolation="process")
async def kill_itself(ctx, payload: Empty) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@handler("isolated.hang", payload=Hang, isolation="process")
async def hang(ctx, payload: Hang) -> None:
    Path(payload.pid_file).write_text(str(os.getpid()))
    await asyncio.Event().wait()
"""


def handler_env(tmp_path: Path, module: str, text: str, **extra: str) -> dict[str, str]:
    """Write ``text`` as the handler module ``module`` in the daemons' working directory."""
    (tmp_path / f"{module}.py").write_text(text)
    return {**FAST_RETRIES, "SCHEDULER_HANDLERS__MODULES": f'["{module}"]', **extra}


async def settled(
    database_url: str, ids: list[str], timeout: float = 40.0
) -> dict[uuid.UUID, asyncpg.Record]:
    """The rows of ``ids`` once none of them is scheduled or running any more, read straight
    from PostgreSQL every 50 ms (two daemons: no single API knows them all first)."""
    wanted = [uuid.UUID(i) for i in ids]
    conn = await asyncpg.connect(database_url)
    rows: list[asyncpg.Record] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                rows = await conn.fetch(
                    "SELECT id, status, attempts FROM tasks WHERE id = ANY($1::uuid[])", wanted
                )
                if all(r["status"] not in ("scheduled", "running") for r in rows):
                    return {r["id"]: r for r in rows}
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        counts = Counter(r["status"] for r in rows)
        raise AssertionError(f"tasks not settled within {timeout}s: {dict(counts)}") from None
    finally:
        await conn.close()


async def attempt_outcomes(database_url: str, ids: list[str]) -> dict[uuid.UUID, list[str]]:
    """Every recorded attempt's outcome, by task, in attempt order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT task_id, outcome FROM task_attempts WHERE task_id = ANY($1::uuid[]) "
            "ORDER BY task_id, number",
            [uuid.UUID(i) for i in ids],
        )
    finally:
        await conn.close()
    outcomes: dict[uuid.UUID, list[str]] = {uuid.UUID(i): [] for i in ids}
    for r in rows:
        outcomes[r["task_id"]].append(r["outcome"])
    return outcomes


async def create_batch(api: Api, tasks: list[dict[str, Any]]) -> list[str]:
    async with api.session.post(api.at("/v1/tasks/batch"), json={"tasks": tasks}) as resp:
        data = await resp.json(content_type=None)
        assert resp.status == 201, (resp.status, data)
    return [item["id"] for item in data["items"]]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- a handler that blocks the loop --------------------------------------------------------


@pytest.mark.timeout(90)
async def test_handlers_blocking_the_loop_do_not_cost_unrelated_tasks_their_leases(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    database_url: str,
    tmp_path: Path,
) -> None:
    env = handler_env(
        tmp_path,
        "loop_blockers",
        BLOCKING_MODULE,
        SCHEDULER_EXECUTOR__LEASE_S=LEASE_S,
        SCHEDULER_RETRY__MAX_ATTEMPTS="3",
    )
    a = await start_daemon(env, name="daemon-A")
    await start_daemon(env, name="daemon-B")
    api = api_for(a)

    # One batch, all due at once: the blocking tasks first (higher priority), so that the
    # daemon that claims them blocks before its unrelated tasks have run.
    blocking = [
        {"action": "blocking.sleep", "payload": {"seconds": BLOCK_S}, "priority": 10}
        for _ in range(BLOCKING_TASKS)
    ]
    unrelated = [webhook(receiver, {"n": n}) for n in range(UNRELATED_TASKS)]
    ids = await create_batch(api, blocking + unrelated)
    blocking_ids, unrelated_ids = ids[:BLOCKING_TASKS], ids[BLOCKING_TASKS:]

    rows = await settled(database_url, ids)
    outcomes = await attempt_outcomes(database_url, ids)

    statuses = Counter(rows[uuid.UUID(i)]["status"] for i in unrelated_ids)
    lost = sum("lost" in outcomes[uuid.UUID(i)] for i in unrelated_ids)
    assert statuses == {"completed": UNRELATED_TASKS}, (statuses, f"{lost} with a lost attempt")
    assert all(outcomes[uuid.UUID(i)] == ["succeeded"] for i in unrelated_ids), outcomes
    delivered = Counter(r.json()["n"] for r in receiver.requests)
    assert delivered == dict.fromkeys(range(UNRELATED_TASKS), 1), delivered
    # The blocking tasks themselves lost nothing either.
    assert all(outcomes[uuid.UUID(i)] == ["succeeded"] for i in blocking_ids), outcomes


@pytest.mark.timeout(60)
async def test_a_blocked_loop_is_logged_naming_the_task_that_blocks_it(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    env = handler_env(
        tmp_path, "loop_blocker", BLOCKING_MODULE, SCHEDULER_WATCHDOG__MAX_LOOP_LAG_S="0.5"
    )
    daemon = await start_daemon(env)
    api = api_for(daemon)

    created = await api.create_task({"action": "blocking.sleep", "payload": {"seconds": 2.0}})
    blocked = await daemon.wait_for_log("event_loop_blocked", task_id=created["id"])
    unblocked = await daemon.wait_for_log("event_loop_unblocked", task_id=created["id"])
    await api.wait_for_status(created["id"], "completed", timeout=20)

    assert blocked["level"] == "error", blocked
    assert (blocked["attempt"], blocked["action"]) == (1, "blocking.sleep"), blocked
    assert unblocked["blocked_s"] >= 0.5, unblocked


# --- plain def handlers --------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_sync_handler_runs_in_a_thread_and_its_result_is_recorded(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(handler_env(tmp_path, "sync_handlers", SYNC_MODULE))
    api = api_for(daemon)

    created = await api.create_task({"action": "sync.sleep", "payload": {"seconds": 0.1}})
    task = await api.wait_for_status(created["id"], "completed", timeout=20)

    assert task["result"]["slept"] == 0.1
    assert task["result"]["attempt"] == 1
    assert task["result"]["thread"].startswith("handler"), task["result"]
    [attempt] = await api.attempts(created["id"])
    assert attempt["outcome"] == "succeeded"


@pytest.mark.timeout(60)
async def test_a_sync_handler_past_its_timeout_is_abandoned_while_other_tasks_run(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(handler_env(tmp_path, "sync_sleepers", SYNC_MODULE))
    api = api_for(daemon)

    slow = await api.create_task(
        {
            "action": "sync.sleep",
            "payload": {"seconds": 300},
            "timeout_s": 1,
            "max_attempts": 1,
        }
    )
    await daemon.wait_for_log("task_claimed", task_id=slow["id"])
    others = [await api.create_task(webhook(receiver, {"n": n})) for n in range(5)]
    for other in others:
        await api.wait_for_status(other["id"], "completed", timeout=20)
    task = await api.wait_for_status(slow["id"], "failed", timeout=20)

    assert len(receiver.requests) == 5
    [attempt] = await api.attempts(slow["id"])
    assert attempt["outcome"] == "timed_out"
    assert attempt["error"] == "timed out after 1s"
    assert task["result"] is None
    # The abandoned thread still sleeps; it does not keep the daemon from stopping.
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait(timeout=20) == 0


# --- process isolation ---------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_an_isolated_handler_runs_in_a_child_process(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(handler_env(tmp_path, "isolated_ok", PROCESS_MODULE))
    api = api_for(daemon)

    created = await api.create_task({"action": "isolated.pid", "payload": {}})
    task = await api.wait_for_status(created["id"], "completed", timeout=20)

    result = task["result"]
    assert (result["task_id"], result["attempt"]) == (created["id"], 1), result
    assert result["pid"] != daemon.proc.pid
    assert process_gone(result["pid"])
    [attempt] = await api.attempts(created["id"])
    assert attempt["outcome"] == "succeeded"


@pytest.mark.timeout(60)
async def test_an_isolated_handler_that_dies_fails_its_attempt_with_the_exit_code(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(handler_env(tmp_path, "isolated_crash", PROCESS_MODULE))
    api = api_for(daemon)

    exits = await api.create_task({"action": "isolated.exit", "payload": {}, "max_attempts": 2})
    killed = await api.create_task({"action": "isolated.kill", "payload": {}, "max_attempts": 1})
    exited_task = await api.wait_for_status(exits["id"], "failed", timeout=20)
    killed_task = await api.wait_for_status(killed["id"], "failed", timeout=20)

    # A crash is a retryable failure: both attempts ran.
    exit_attempts = await api.attempts(exits["id"])
    assert [(a["number"], a["outcome"]) for a in exit_attempts] == [
        (1, "failed"),
        (2, "failed"),
    ]
    assert all(a["error"] == "handler process exited with code 3" for a in exit_attempts)
    assert exited_task["last_error"] == "handler process exited with code 3"
    [kill_attempt] = await api.attempts(killed["id"])
    assert kill_attempt["outcome"] == "failed"
    assert kill_attempt["error"] == "handler process exited with code -9 (SIGKILL)"
    assert killed_task["last_error"] == kill_attempt["error"]


@pytest.mark.timeout(60)
async def test_an_isolated_handler_past_its_timeout_is_killed(
    start_daemon: StartDaemon,
    api_for: Callable[[DaemonProcess], Api],
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(handler_env(tmp_path, "isolated_hang", PROCESS_MODULE))
    api = api_for(daemon)
    pid_file = tmp_path / "hang.pid"

    created = await api.create_task(
        {
            "action": "isolated.hang",
            "payload": {"pid_file": str(pid_file)},
            "timeout_s": 3,
            "max_attempts": 1,
        }
    )
    task = await api.wait_for_status(created["id"], "failed", timeout=20)

    [attempt] = await api.attempts(created["id"])
    assert attempt["outcome"] == "timed_out"
    assert attempt["error"] == "timed out after 3s"
    assert task["result"] is None
    assert process_gone(int(pid_file.read_text()))
