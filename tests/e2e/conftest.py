"""End-to-end helpers: the real daemon as a subprocess, a controllable webhook receiver, and a
small client for the daemon's HTTP API.

Nothing here sleeps to wait for something to happen: log lines, webhook requests and process
exits are awaited as events. The one exception is ``Api.wait_for_status``, which polls the task
every 50 ms (the API offers no push notification of status changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web

LOG_TAIL = 60
STREAM_LIMIT = 1 << 20
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_S = 0.05


def free_port() -> int:
    """A port nothing listens on right now (bound to 0, read back, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any SCHEDULER_* variable (SCHEDULER_CONFIG above all),
    plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCHEDULER_")}
    env.update(overrides)
    return env


def cli_command(*args: str) -> list[str]:
    """``scheduler-daemon <args>``: the installed console script next to this interpreter."""
    script = Path(sys.executable).with_name("scheduler-daemon")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "scheduler_daemon", *args]


# -- the daemon process ---------------------------------------------------------------------


class DaemonProcess:
    """One ``scheduler-daemon run`` child; its stderr JSON log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, name: str) -> None:
        self.proc = proc
        self.port = port
        self.name = name
        self.base_url = f"http://127.0.0.1:{port}"
        self.logs: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._eof = False
        self._reader = asyncio.create_task(self._read_stderr(), name=f"{name}-stderr")

    async def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            while True:
                raw = await stream.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    record = {"event": None, "raw": line}
                async with self._changed:
                    self.logs.append(record)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    def _find(self, event: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        for record in self.logs:
            if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
                return record
        return None

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.logs if r.get("event") == event]

    def log_tail(self, n: int = LOG_TAIL) -> str:
        return "\n".join(json.dumps(r) for r in self.logs[-n:])

    async def wait_for_log(
        self, event: str, timeout: float = 30.0, **fields: Any
    ) -> dict[str, Any]:
        """The first log line with this ``event`` (and these field values), as it arrives.

        Fails at once if the process closes stderr (exits) without having logged it.
        """
        found: dict[str, Any] | None = None

        def ready() -> bool:
            nonlocal found
            found = self._find(event, fields)
            return found is not None or self._eof

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {event!r} log line {fields or ''} within {timeout}s; "
                f"last lines:\n{self.log_tail()}"
            ) from None
        if found is None:
            raise AssertionError(
                f"{self.name}: exited (code {self.proc.returncode}) without logging {event!r}; "
                f"last lines:\n{self.log_tail()}"
            )
        return found

    def send_signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no drain, no release, leases left to expire."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code (negative: the signal that killed it), once stderr is drained too."""
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await self._reader
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: still running after {timeout}s; last lines:\n{self.log_tail()}"
            ) from None
        return code

    async def close(self) -> None:
        """Teardown: kill if still running, reap, stop the reader."""
        self.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.proc.wait()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(5):
                await self._reader
        if not self._reader.done():
            self._reader.cancel()


class StartDaemon(Protocol):
    async def __call__(
        self, env: Mapping[str, str] | None = None, *, ready: bool = True, name: str = ...
    ) -> DaemonProcess: ...


@pytest.fixture
async def start_daemon(database_url: str, tmp_path: Path) -> AsyncIterator[StartDaemon]:
    """Start ``scheduler-daemon run`` on this test's database, on a fresh port.

    ``env`` adds or overrides ``SCHEDULER_*`` variables; with ``ready`` (the default) it returns
    once the daemon logged ``daemon_started``. Every process is killed at teardown; its log is
    printed so that a failing test shows it.
    """
    started: list[DaemonProcess] = []

    async def start(
        env: Mapping[str, str] | None = None, *, ready: bool = True, name: str = ""
    ) -> DaemonProcess:
        port = free_port()
        settings = {
            "SCHEDULER_DATABASE__URL": database_url,
            "SCHEDULER_HTTP__HOST": "127.0.0.1",
            "SCHEDULER_HTTP__PORT": str(port),
            "SCHEDULER_LOG__FORMAT": "json",
            "SCHEDULER_LOG__LEVEL": "debug",
            # The receivers live on loopback; test_ssrf turns the guard back on.
            "SCHEDULER_WEBHOOK__ALLOW_PRIVATE_NETWORKS": "true",
        }
        settings.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            *cli_command("run"),
            env=child_env(settings),
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            limit=STREAM_LIMIT,
        )
        daemon = DaemonProcess(proc, port, name or f"daemon-{len(started) + 1}")
        started.append(daemon)
        if ready:
            await daemon.wait_for_log("daemon_started", timeout=30)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            await daemon.close()
        for daemon in started:
            print(f"--- {daemon.name} (exit {daemon.proc.returncode}) stderr ---")
            print(daemon.log_tail(400))


# -- the webhook receiver -------------------------------------------------------------------

# Retries come quickly; nothing else about timing is shortened unless a test needs it.
FAST_RETRIES = {
    "SCHEDULER_RETRY__BASE_S": "0.05",
    "SCHEDULER_RETRY__CAP_S": "0.2",
}


def webhook(receiver: WebhookReceiver, body: Any, **extra: Any) -> dict[str, Any]:
    """A webhook task POSTing ``body`` as JSON to ``receiver``."""
    return {
        "action": "webhook",
        "payload": {"url": receiver.url(), "method": "POST", "json": body},
        **extra,
    }


def logged(daemon: DaemonProcess, event: str, count: int = 1) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the daemon logged ``event`` at least ``count`` times."""

    async def check() -> bool:
        return len(daemon.events(event)) >= count

    return check


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every request and answers as the test says.

    ``status``/``reply`` are the response; after ``block()``, each arriving request is
    recorded (so ``wait_for_requests`` sees it) and then held until ``unblock()``.
    """

    status: int = 200
    reply: str = "ok"
    requests: list[ReceivedRequest] = field(default_factory=list)
    port: int = 0
    _gate: asyncio.Event | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def block(self) -> None:
        """Hold every request from now on until ``unblock()``."""
        if self._gate is None:
            self._gate = asyncio.Event()

    def unblock(self) -> None:
        """Let held requests answer, and stop holding new ones."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            received_at=datetime.now(UTC),
        )
        gate = self._gate
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        if gate is not None:
            await gate.wait()
        return web.Response(status=self.status, text=self.reply)

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[ReceivedRequest]:
        """Return once at least ``count`` requests arrived (all recorded so far)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            raise AssertionError(
                f"receiver: {len(self.requests)} request(s) within {timeout}s, expected {count}"
            ) from None
        return list(self.requests)


@contextlib.asynccontextmanager
async def serve_receiver() -> AsyncIterator[WebhookReceiver]:
    """A WebhookReceiver listening on a free loopback port until the block ends."""
    hook = WebhookReceiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.port = runner.addresses[0][1]
    try:
        yield hook
    finally:
        hook.unblock()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with serve_receiver() as hook:
        yield hook


# -- the daemon's HTTP API ------------------------------------------------------------------


@dataclass
class Api:
    """A thin client for one daemon's API on a shared ClientSession."""

    session: aiohttp.ClientSession
    base_url: str

    def at(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def create_task(self, body: Mapping[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.at("/v1/tasks"), json=body) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == 201, (resp.status, data)
            assert isinstance(data, dict)
            return data

    async def get_task(self, task_id: str) -> dict[str, Any]:
        async with self.session.get(self.at(f"/v1/tasks/{task_id}")) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == 200, (resp.status, data)
            assert isinstance(data, dict)
            return data

    async def attempts(self, task_id: str) -> list[dict[str, Any]]:
        async with self.session.get(self.at(f"/v1/tasks/{task_id}/attempts")) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == 200, (resp.status, data)
            items = data["items"]
            assert isinstance(items, list)
            return items

    async def wait_for_status(
        self, task_id: str, status: str | Iterable[str], timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll the task every 50 ms until its status is ``status`` (fail early when it reaches
        a different terminal status)."""
        wanted = {status} if isinstance(status, str) else set(status)
        task: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    task = await self.get_task(task_id)
                    if task["status"] in wanted:
                        return task
                    if task["status"] in TERMINAL_STATUSES:
                        raise AssertionError(
                            f"task {task_id} ended {task['status']!r}, expected {wanted}: {task}"
                        )
                    await asyncio.sleep(POLL_INTERVAL_S)
        except TimeoutError:
            raise AssertionError(
                f"task {task_id} not {wanted} within {timeout}s; last seen: {task}"
            ) from None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def api_for(http: aiohttp.ClientSession) -> Callable[[DaemonProcess], Api]:
    def make(daemon: DaemonProcess) -> Api:
        return Api(http, daemon.base_url)

    return make


# -- the CLI ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 30
) -> CliResult:
    """Run ``scheduler-daemon <args>`` to completion with only ``env`` as SCHEDULER_* settings."""
    proc = await asyncio.create_subprocess_exec(
        *cli_command(*args),
        env=child_env(env or {}),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"scheduler-daemon {' '.join(args)}: no exit in {timeout}s") from None
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())
