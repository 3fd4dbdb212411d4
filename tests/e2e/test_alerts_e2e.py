"""Alerts through the real daemon: a task that fails for good reaches the alert channels."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.e2e.conftest import Api, DaemonProcess, StartDaemon, WebhookReceiver, serve_receiver

pytestmark = pytest.mark.e2e

SECRET_PATH = "/services/T000/B000/alert-hook-secret"


@pytest.fixture
async def alert_receiver() -> AsyncIterator[WebhookReceiver]:
    """A second receiver, for the alert channels."""
    async with serve_receiver() as hook:
        yield hook


@pytest.mark.timeout(60)
async def test_a_task_failed_for_good_alerts_the_channels(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    alert_receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    http: aiohttp.ClientSession,
) -> None:
    receiver.status = 400
    receiver.reply = "no such order"
    channels = [
        {
            "name": "ops-hook",
            "kind": "webhook",
            "url": alert_receiver.url(f"/generic{SECRET_PATH}"),
        },
        {"name": "ops-chat", "kind": "slack", "url": alert_receiver.url(f"/slack{SECRET_PATH}")},
    ]
    daemon = await start_daemon({"SCHEDULER_ALERTS__CHANNELS": json.dumps(channels)})
    api = api_for(daemon)

    created = await api.create_task(
        {
            "action": "webhook",
            "payload": {"url": receiver.url(), "json": {"order": 42}},
            "max_attempts": 1,
            "queue": "billing",
        }
    )
    task = await api.wait_for_status(created["id"], "failed", timeout=20)
    assert "HTTP 400" in task["last_error"]

    requests = await alert_receiver.wait_for_requests(2, timeout=20)
    by_path = {r.path.split("/")[1]: r for r in requests}
    body = by_path["generic"].json()
    assert body["event"] == "task_failed"
    assert body["task_id"] == created["id"]
    assert (body["action"], body["queue"], body["attempts"]) == ("webhook", "billing", 1)
    assert "HTTP 400" in body["error"]
    assert body["suppressed"] == 0
    assert body["daemon"]
    message = by_path["slack"].json()
    assert created["id"] in message["text"]
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]

    await daemon.wait_for_log("alert_sent", channel="ops-hook")
    await daemon.wait_for_log("alert_sent", channel="ops-chat")
    async with http.get(f"{daemon.base_url}/metrics") as resp:
        metrics = await resp.text()
    assert 'scheduler_alerts_total{event="task_failed",result="sent"} 2.0' in metrics

    # The channel URLs are secrets: masked in the admin config, never logged.
    async with http.get(f"{daemon.base_url}/v1/admin/config") as resp:
        config = await resp.json()
    assert [c["url"] for c in config["config"]["alerts"]["channels"]] == ["***", "***"]
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait() == 0
    assert "alert-hook-secret" not in daemon.log_tail(10_000)
