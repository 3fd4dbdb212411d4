"""The embedded PostgreSQL: data survives restarts, daemons on one folder share one server,
and a daemon killed with SIGKILL does not stop the next one from starting."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from scheduler_daemon.store.embedded import start_embedded
from tests.e2e.conftest import STREAM_LIMIT, DaemonProcess, child_env, cli_command, free_port

pytestmark = pytest.mark.e2e


class Embedded:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.daemons: list[DaemonProcess] = []

    async def start(self, name: str) -> DaemonProcess:
        port = free_port()
        env = child_env(
            {
                "SCHEDULER_DATABASE__EMBEDDED_DIR": str(self.data_dir),
                "SCHEDULER_HTTP__HOST": "127.0.0.1",
                "SCHEDULER_HTTP__PORT": str(port),
                "SCHEDULER_LOG__FORMAT": "json",
            }
        )
        proc = await asyncio.create_subprocess_exec(
            *cli_command("run"),
            env=env,
            cwd=self.data_dir.parent,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            limit=STREAM_LIMIT,
        )
        daemon = DaemonProcess(proc, port, name)
        self.daemons.append(daemon)
        await daemon.wait_for_log("daemon_started", timeout=90)
        return daemon


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Embedded]:
    env = Embedded(tmp_path / "data")
    try:
        yield env
    finally:
        for daemon in env.daemons:
            await daemon.close()
        # Every daemon is gone: the next handle is the last one and stops the server.
        server = await asyncio.to_thread(start_embedded, env.data_dir)
        await asyncio.to_thread(server.stop)


async def _task_ids(http: aiohttp.ClientSession, daemon: DaemonProcess) -> set[str]:
    async with http.get(f"{daemon.base_url}/v1/tasks") as resp:
        assert resp.status == 200
        return {t["id"] for t in (await resp.json())["items"]}


@pytest.mark.timeout(240)
async def test_shared_server_survives_kill_and_restart(embedded: Embedded) -> None:
    async with aiohttp.ClientSession() as http:
        first = await embedded.start("first")
        assert first.events("embedded_database_started")
        body = {"action": "noop", "delay_s": 3600}
        async with http.post(f"{first.base_url}/v1/tasks", json=body) as resp:
            assert resp.status == 201
            task_id = (await resp.json())["id"]

        # A second daemon on the same folder joins the running server.
        second = await embedded.start("second")
        assert task_id in await _task_ids(http, second)

        # SIGKILL leaves a stale handle behind; it must not get in the way.
        first.kill()
        assert await first.wait() == -signal.SIGKILL
        second.send_signal(signal.SIGTERM)
        assert await second.wait() == 0

        third = await embedded.start("third")
        assert task_id in await _task_ids(http, third)
        third.send_signal(signal.SIGTERM)
        assert await third.wait() == 0
        # The last daemon on the folder stopped the server on its way out.
        assert not (embedded.data_dir / "pgdata" / "postmaster.pid").exists()

        # The last daemon stopped the server; the data is still there on the next start.
        fourth = await embedded.start("fourth")
        assert task_id in await _task_ids(http, fourth)
        fourth.send_signal(signal.SIGTERM)
        assert await fourth.wait() == 0
