"""The webhook SSRF guard in the real daemon: every spelling of a loopback target is refused
and a canary listener on loopback gets no request; allow_hosts opens a single exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import Api, DaemonProcess, StartDaemon, WebhookReceiver

pytestmark = pytest.mark.e2e

GUARD_ON = {"SCHEDULER_WEBHOOK__ALLOW_PRIVATE_NETWORKS": "false"}


def spellings(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://2130706433:{port}/hook",  # decimal
        f"http://0x7f000001:{port}/hook",  # hexadecimal
        f"http://017700000001:{port}/hook",  # octal
        f"http://127.1:{port}/hook",  # short form
        f"http://[::ffff:127.0.0.1]:{port}/hook",  # IPv4-mapped IPv6
        f"http://[::1]:{port}/hook",
    ]


@pytest.mark.timeout(90)
async def test_loopback_in_every_spelling_is_refused(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    daemon = await start_daemon(GUARD_ON)
    api = api_for(daemon)
    ids = []
    for url in spellings(receiver.port):
        task = await api.create_task(
            {"action": "webhook", "payload": {"url": url}, "max_attempts": 3}
        )
        ids.append(task["id"])
    for task_id, url in zip(ids, spellings(receiver.port), strict=True):
        task = await api.wait_for_status(task_id, "failed")
        # Refused for good at the first attempt, with the setting named.
        assert task["attempts"] == 1, (url, task)
        assert "webhook.allow_private_networks" in task["last_error"], (url, task)
    assert receiver.requests == []  # the canary heard nothing


@pytest.mark.timeout(60)
async def test_allow_hosts_opens_one_exception(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
) -> None:
    daemon = await start_daemon({**GUARD_ON, "SCHEDULER_WEBHOOK__ALLOW_HOSTS": '["localhost"]'})
    api = api_for(daemon)
    allowed = await api.create_task(
        {"action": "webhook", "payload": {"url": f"http://localhost:{receiver.port}/hook"}}
    )
    refused = await api.create_task(
        {"action": "webhook", "payload": {"url": f"http://127.0.0.1:{receiver.port}/hook"}}
    )
    await api.wait_for_status(allowed["id"], "completed")
    await api.wait_for_status(refused["id"], "failed")
    assert len(receiver.requests) == 1
