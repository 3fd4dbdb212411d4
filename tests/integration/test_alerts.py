"""Alert delivery against real HTTP receivers on loopback: a generic webhook channel and a
Slack-compatible one, retries, a hanging receiver, deduplication and the SSRF guard; and the
expander's misfire alert against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from scheduler_daemon.alerts import Alert, Alerter, component_stalled, task_failed
from scheduler_daemon.app import guard_policy
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.engine.expander import Expander
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from scheduler_daemon.store.schedules import PostgresScheduleStore
from tests.integration.serve import serve_api

OWNER = "test-host/1/abc"
SECRET_PATH = "/services/T000/B000/not-to-be-logged"


@dataclass
class Receiver:
    """Records every request; answers with the next of ``statuses`` (then 200), or holds the
    request until the test ends when ``hang``."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    bodies: list[Any] = field(default_factory=list)
    held: int = 0  # requests it holds now (``hang``)
    port: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._changed:
            self.bodies.append(body)
            self._changed.notify_all()
        if self.hang:
            self.held += 1
            await self._release.wait()
            self.held -= 1
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.bodies) >= count)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.bodies)} request(s) within {timeout}s, expected {count}"
            ) from None
        return list(self.bodies)


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        receiver._release.set()
        await runner.cleanup()


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as receiver:
        yield receiver


@pytest.fixture
async def slack() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as receiver:
        yield receiver


def settings(
    *channels: dict[str, Any], private: bool = True, **alerts: Any
) -> Callable[[], Settings]:
    s = Settings(
        webhook={"allow_private_networks": private},
        alerts={"channels": list(channels), "timeout_s": 5.0, **alerts},
    )
    return lambda: s


@asynccontextmanager
async def running(live: Callable[[], Settings]) -> AsyncIterator[Alerter]:
    alerter = Alerter(
        lambda: live().alerts,
        OWNER,
        SystemClock(),
        guard=lambda: guard_policy(live().webhook),
        metrics=Metrics(version="test"),
        retry_base_s=0.05,
    )
    task = asyncio.create_task(alerter.run())
    try:
        yield alerter
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def failed(task_id: uuid.UUID | None = None, error: str = "HTTP 400 from POST x") -> Any:
    return task_failed(task_id or uuid.uuid4(), "webhook", "billing", 3, error)


async def test_generic_and_slack_channels_get_their_payloads(
    hook: Receiver, slack: Receiver
) -> None:
    live = settings(
        {"name": "generic", "kind": "webhook", "url": hook.url()},
        {"name": "chat", "kind": "slack", "url": slack.url()},
    )
    task_id = uuid.uuid4()
    async with running(live) as alerter:
        alerter.emit(failed(task_id, "HTTP 400 from POST billing.internal"))
        [body] = await hook.wait_for(1)
        [message] = await slack.wait_for(1)
        assert await alerter.drain(5.0)
    assert body["event"] == "task_failed"
    assert body["task_id"] == str(task_id)
    assert (body["action"], body["queue"], body["attempts"]) == ("webhook", "billing", 3)
    assert body["error"] == "HTTP 400 from POST billing.internal"
    assert body["suppressed"] == 0
    assert body["daemon"] == OWNER
    assert body["occurred_at"]
    assert str(task_id) in body["summary"]

    assert message["text"] == body["summary"]
    section, context = message["blocks"]
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    assert "HTTP 400 from POST billing.internal" in section["text"]["text"]
    assert context["type"] == "context"
    assert f"*task_id:* {task_id}" in [e["text"] for e in context["elements"]]
    assert alerter.counts[("task_failed", "sent")] == 2


async def test_a_receiver_failing_twice_gets_the_alert_on_the_third_try(hook: Receiver) -> None:
    hook.statuses = [500, 500]
    live = settings({"name": "generic", "kind": "webhook", "url": hook.url()})
    async with running(live) as alerter:
        with capture_logs() as logs:
            alerter.emit(failed())
            bodies = await hook.wait_for(3)
            assert await alerter.drain(5.0)
    assert bodies[0] == bodies[1] == bodies[2]
    assert [e["attempt"] for e in logs if e["event"] == "alert_delivery_retry"] == [1, 2]
    [sent] = [e for e in logs if e["event"] == "alert_sent"]
    assert (sent["channel"], sent["attempt"]) == ("generic", 3)
    assert alerter.counts[("task_failed", "sent")] == 1
    assert alerter.counts[("task_failed", "failed")] == 0
    assert SECRET_PATH not in json.dumps(logs, default=str)  # only the channel's name


async def test_giving_up_after_max_attempts(hook: Receiver) -> None:
    hook.statuses = [503] * 10
    live = settings({"name": "generic", "kind": "webhook", "url": hook.url()}, max_attempts=2)
    async with running(live) as alerter:
        with capture_logs() as logs:
            alerter.emit(failed())
            assert await alerter.drain(5.0)
    assert len(hook.bodies) == 2
    [gave_up] = [e for e in logs if e["event"] == "alert_failed"]
    assert (gave_up["attempts"], gave_up["error"]) == (2, "HTTP 503")
    assert alerter.counts[("task_failed", "failed")] == 1


async def test_a_hanging_receiver_delays_neither_emit_nor_the_other_channel(
    hook: Receiver, slack: Receiver
) -> None:
    slack.hang = True
    live = settings(
        {"name": "stuck", "kind": "slack", "url": slack.url()},
        {"name": "generic", "kind": "webhook", "url": hook.url()},
        timeout_s=30.0,
    )
    async with running(live) as alerter:
        alerter.emit(component_stalled("completer", 130.0))
        await slack.wait_for(1)  # held by the receiver from now on
        for n in range(50):
            alerter.emit(failed(error=f"error {n}"))
            alerter.emit(component_stalled(f"loop-{n}", 130.0))
        bodies = await hook.wait_for(52, timeout=5.0)
        # All delivered while the stuck channel still waits for its first answer.
        assert slack.held >= 1
        assert not [key for key in alerter.counts if key[1] == "failed"]
    assert bodies[0]["component"] == "completer"
    assert {b["event"] for b in bodies} == {"task_failed", "component_stalled"}
    # The stuck channel holds 4 requests (its concurrency); the rest wait their turn.
    assert 1 <= len(slack.bodies) <= 4


async def test_twenty_alike_alerts_make_one_delivery_then_one_with_the_count(
    hook: Receiver,
) -> None:
    live = settings({"name": "generic", "kind": "webhook", "url": hook.url()}, dedupe_window_s=1.0)
    async with running(live) as alerter:
        for n in range(20):
            alerter.emit(failed(error=f"HTTP 500 #{n}"))
        [first] = await hook.wait_for(1)
        assert first["suppressed"] == 0
        assert first["error"] == "HTTP 500 #0"
        first_two = await hook.wait_for(2, timeout=5.0)  # at the window's end
        assert await alerter.drain(5.0)
    later = first_two[1]
    assert later["suppressed"] == 19
    assert later["error"] == "HTTP 500 #19"
    assert later["summary"].endswith("(and 19 more like it)")
    assert len(hook.bodies) == 2
    assert alerter.counts[("task_failed", "sent")] == 2
    assert alerter.counts[("task_failed", "suppressed")] == 19


async def test_the_ssrf_guard_applies_to_channels(hook: Receiver) -> None:
    live = settings({"name": "generic", "kind": "webhook", "url": hook.url()}, private=False)
    async with running(live) as alerter:
        with capture_logs() as logs:
            alerter.emit(failed())
            assert await alerter.drain(5.0)
    assert hook.bodies == []
    [refused] = [e for e in logs if e["event"] == "alert_failed"]
    assert refused["attempts"] == 1  # refused targets are not retried
    assert "webhook.allow_private_networks" in refused["error"]
    assert SECRET_PATH not in json.dumps(logs, default=str)
    assert alerter.counts[("task_failed", "failed")] == 1


async def test_the_expander_alerts_a_misfired_schedule(
    store: PostgresStore, pool: asyncpg.Pool
) -> None:
    alerts: list[Alert] = []
    async with (
        serve_api(store) as api,
        api.post(
            "/v1/schedules",
            json={
                "name": "minutely",
                "cron": "* * * * *",
                "task": {"action": "noop", "queue": "reports"},
                "misfire_grace_s": 30,
            },
        ) as resp,
    ):
        assert resp.status == 201
        schedule_id = uuid.UUID((await resp.json())["id"])
    # As if the daemons had been down for ten minutes.
    await pool.execute(
        "UPDATE schedules SET next_run_at = date_trunc('minute', now()) - interval '10 min', "
        "expand_at = now() WHERE id = $1",
        schedule_id,
    )
    expander = Expander(
        PostgresScheduleStore(pool),
        SystemClock(),
        horizon_s=lambda: 5.0,
        batch_size=lambda: 100,
        poll_interval_s=lambda: 1.0,
        alerts=alerts.append,
    )
    await expander.expand_due()
    [alert] = alerts
    assert (alert.event, alert.schedule_id) == ("schedule_misfired", schedule_id)
    assert (alert.action, alert.queue) == ("noop", "reports")
    assert alert.missed in (10, 11)  # and the current minute's, if more than 30 s old
    assert alert.skipped == alert.missed - 1  # run_once: one catch-up run
    assert "minutely" in alert.summary
    assert "run_once" in alert.summary

    await expander.expand_due()  # nothing missed any more: no second alert
    assert len(alerts) == 1
