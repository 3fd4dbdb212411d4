"""The eventbridge backend end to end: the real daemon process against a real moto server
(SQS and EventBridge Scheduler) on loopback, through aiobotocore."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from scheduler_daemon.aws.clients import scheduler_client, sqs_client
from scheduler_daemon.aws.emulator import EventBridgeEmulator
from tests.aws import REGION, ROLE_ARN, AwsResources, outage_proxy, queue_depth
from tests.e2e.conftest import (
    FAST_RETRIES,
    Api,
    DaemonProcess,
    StartDaemon,
    WebhookReceiver,
    logged,
    webhook,
)
from tests.integration.serve import eventually

pytestmark = pytest.mark.e2e

FAST = {
    **FAST_RETRIES,
    "SCHEDULER_DISCOVERY__POLL_INTERVAL_S": "0.5",
    # Short long polls, so that a stopping daemon's receive calls end quickly.
    "SCHEDULER_SQS__WAIT_TIME_S": "1",
}


async def get_schedule(aws: AwsResources, name: str) -> dict[str, Any] | None:
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        try:
            answer = await scheduler.get_schedule(Name=name, GroupName=aws.group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
    return dict(answer)


async def metric(http: aiohttp.ClientSession, daemon: DaemonProcess, name: str) -> float:
    """The value of one sample of the daemon's /metrics (0 when absent)."""
    async with http.get(f"{daemon.base_url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rpartition(" ")[2])
    return 0.0


async def queue_empty(aws: AwsResources) -> bool:
    return await queue_depth(aws) == (0, 0)


@pytest.mark.timeout(60)
async def test_far_task_becomes_an_at_schedule_and_cancel_deletes_it(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon({**aws.daemon_env(), **FAST})
    api = api_for(daemon)
    run_at = (datetime.now(UTC) + timedelta(minutes=20)).replace(microsecond=0)
    task = await api.create_task(webhook(receiver, {"far": True}, run_at=run_at.isoformat()))
    name = f"task-{task['id']}-1"

    async def scheduled() -> bool:
        return await get_schedule(aws, name) is not None

    await eventually(scheduled)
    schedule = await get_schedule(aws, name)
    assert schedule is not None
    fire_at = run_at - timedelta(seconds=60)  # eventbridge.lead_s ahead of run_at
    assert schedule["ScheduleExpression"] == f"at({fire_at:%Y-%m-%dT%H:%M:%S})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["State"] == "ENABLED"
    target = schedule["Target"]
    assert target["Arn"] == aws.queue_arn
    assert target["RoleArn"] == ROLE_ARN
    assert target["DeadLetterConfig"] == {"Arn": aws.dlq_arn}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 185
    # The message carries the task and its scheduling, never the payload.
    assert json.loads(target["Input"]) == {"task_id": task["id"], "series": 1}
    assert await metric(http, daemon, "scheduler_outbox_published_total") >= 1

    async with http.delete(api.at(f"/v1/tasks/{task['id']}")) as resp:
        assert resp.status == 200, await resp.text()

    async def deleted() -> bool:
        return await get_schedule(aws, name) is None

    await eventually(deleted)
    assert (await api.get_task(task["id"]))["status"] == "cancelled"
    assert await queue_depth(aws) == (0, 0)
    assert receiver.requests == []


@pytest.mark.timeout(60)
async def test_immediate_task_runs_through_sqs_and_its_message_is_deleted(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon({**aws.daemon_env(), **FAST})
    api = api_for(daemon)
    task = await api.create_task(webhook(receiver, {"now": True}))
    done = await api.wait_for_status(task["id"], "completed")
    assert done["attempts"] == 1
    assert [r.json() for r in receiver.requests] == [{"now": True}]
    await eventually(lambda: queue_empty(aws))
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="claimed"}') == 1
    # No discovery in this backend: the consumer claimed it.
    assert daemon.events("task_claimed")


@pytest.mark.timeout(60)
async def test_duplicate_messages_run_the_task_once(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon({**aws.daemon_env(), **FAST})
    api = api_for(daemon)
    run_at = datetime.now(UTC) + timedelta(seconds=3)
    task = await api.create_task(webhook(receiver, {"dup": 1}, run_at=run_at.isoformat()))
    body = json.dumps({"task_id": task["id"], "series": 1})
    # SQS standard queues deliver at least once: two more copies of the same wake-up.
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        for _ in range(2):
            await sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body, DelaySeconds=2)
        await sqs.send_message(QueueUrl=aws.queue_url, MessageBody="{not json")
    await api.wait_for_status(task["id"], "completed")
    await eventually(lambda: queue_empty(aws))
    assert len(receiver.requests) == 1
    assert (await api.get_task(task["id"]))["attempts"] == 1
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="stale"}') == 2
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="malformed"}') == 1
    malformed = await daemon.wait_for_log("message_malformed")
    assert "body" not in malformed
    assert malformed["reason"] == "not JSON"


@pytest.mark.timeout(60)
async def test_poison_messages_are_deleted_and_never_stall_the_consumer(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon({**aws.daemon_env(), **FAST})
    api = api_for(daemon)
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    tasks = [
        await api.create_task(webhook(receiver, {"n": n}, run_at=run_at.isoformat()))
        for n in range(3)
    ]
    victim = tasks[0]["id"]
    secret = "poison-marker-2c9e"
    poison = [
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON decoder goes
        json.dumps({"task_id": victim, "series": 4294967296}),  # past the int column
        json.dumps({"task_id": victim, "series": -1}),
        json.dumps({"task_id": victim, "series": True}),
        json.dumps({"task_id": secret, "series": 1}),
    ]
    # Visible about when the tasks' own wake-ups are: received with them.
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        for body in poison:
            await sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body, DelaySeconds=1)
    for task in tasks:
        await api.wait_for_status(task["id"], "completed")
    await eventually(lambda: queue_empty(aws))
    assert sorted(r.json()["n"] for r in receiver.requests) == [0, 1, 2]
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="malformed"}') == 5
    await eventually(logged(daemon, "message_malformed", 5))
    for event in daemon.events("message_malformed"):
        assert "body" not in event
    assert secret not in json.dumps(daemon.logs)
    # Nothing crashed, no receive was given up on.
    assert daemon.events("component_crashed") == []
    assert daemon.events("receive_failed") == []


@pytest.mark.timeout(60)
async def test_long_task_keeps_its_message_invisible(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    daemon = await start_daemon(
        {**aws.daemon_env(), **FAST, "SCHEDULER_SQS__VISIBILITY_TIMEOUT_S": "5"}
    )
    api = api_for(daemon)
    receiver.block()
    task = await api.create_task(webhook(receiver, {"long": True}, timeout_s=60))
    await receiver.wait_for_requests(1)
    # Four extensions of a 5 s timeout (one every 5/3 s): the task has run past it.
    for n in range(1, 5):
        await eventually(logged(daemon, "messages_extended", n), timeout=30)
    assert await queue_depth(aws) == (0, 1)
    receiver.unblock()
    await api.wait_for_status(task["id"], "completed")
    await eventually(lambda: queue_empty(aws))
    assert len(receiver.requests) == 1
    # The message never came back while the task ran.
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="stale"}') == 0


@pytest.mark.timeout(90)
async def test_aws_outage_delays_tasks_and_loses_none(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
) -> None:
    async with outage_proxy(aws.endpoint_url) as proxy:
        daemon = await start_daemon({**aws.daemon_env(proxy.endpoint_url), **FAST})
        api = api_for(daemon)
        await proxy.down()
        ids = [(await api.create_task(webhook(receiver, {"n": n})))["id"] for n in range(20)]
        # Down for several failed publishing passes (about 10 s of backoff).
        for n in range(1, 6):
            await eventually(logged(daemon, "publish_failed", n), timeout=30)
        assert {(await api.get_task(i))["status"] for i in ids} == {"scheduled"}
        await proxy.up()
        for task_id in ids:
            await api.wait_for_status(task_id, "completed", timeout=60)
    assert sorted(r.json()["n"] for r in receiver.requests) == list(range(20))


@pytest.mark.timeout(90)
async def test_kill_9_mid_task_second_daemon_finishes_it_once(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
) -> None:
    settings = {
        **aws.daemon_env(),
        **FAST,
        "SCHEDULER_EXECUTOR__LEASE_S": "2",
        "SCHEDULER_EXECUTOR__HEARTBEAT_S": "0.5",
        "SCHEDULER_SQS__VISIBILITY_TIMEOUT_S": "5",
    }
    a = await start_daemon(settings, name="daemon-A")
    receiver.block()
    task = await api_for(a).create_task(webhook(receiver, {"survive": "kill -9"}))
    await receiver.wait_for_requests(1)
    a.kill()
    assert await a.wait(timeout=10) == -signal.SIGKILL
    receiver.unblock()

    b = await start_daemon(settings, name="daemon-B")
    api_b = api_for(b)
    done = await api_b.wait_for_status(task["id"], "completed", timeout=60)
    assert done["attempts"] == 2
    outcomes = [a["outcome"] for a in await api_b.attempts(task["id"])]
    assert outcomes == ["lost", "succeeded"]
    assert len(receiver.requests) == 2  # A's cut-off attempt and B's
    await eventually(lambda: queue_empty(aws), timeout=30)


@pytest.mark.timeout(90)
async def test_sigterm_puts_tasks_back_with_their_messages_visible_at_once(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
) -> None:
    # A visibility timeout far past the test's: only the drain's visibility 0 lets B see it.
    settings = {
        **aws.daemon_env(),
        **FAST,
        "SCHEDULER_SQS__VISIBILITY_TIMEOUT_S": "600",
        "SCHEDULER_SHUTDOWN__GRACE_S": "0.2",
    }
    a = await start_daemon(settings, name="daemon-A")
    receiver.block()
    task = await api_for(a).create_task(webhook(receiver, {"drain": True}, timeout_s=60))
    await receiver.wait_for_requests(1)
    a.send_signal(signal.SIGTERM)
    assert await a.wait(timeout=30) == 0
    await a.wait_for_log("task_released", task_id=task["id"])
    receiver.unblock()

    b = await start_daemon(settings, name="daemon-B")
    done = await api_for(b).wait_for_status(task["id"], "completed", timeout=30)
    assert done["attempts"] == 1  # the interrupted attempt is not counted
    assert len(receiver.requests) == 2
    await eventually(lambda: queue_empty(aws), timeout=30)


@pytest.mark.timeout(90)
async def test_early_at_delivery_is_held_until_run_at(
    start_daemon: StartDaemon,
    receiver: WebhookReceiver,
    api_for: Callable[[DaemonProcess], Api],
    aws: AwsResources,
    http: aiohttp.ClientSession,
) -> None:
    # The 15-minute SQS path shrunk to 5 s so that a task due in 20 s takes the EventBridge
    # path; its schedule fires lead_s (10 s) ahead and the emulator delivers 5 s earlier
    # still, as at()'s one-minute precision may.
    daemon = await start_daemon(
        {
            **aws.daemon_env(),
            **FAST,
            "SCHEDULER_EVENTBRIDGE__SCHEDULE_AFTER_S": "5",
            "SCHEDULER_EVENTBRIDGE__LEAD_S": "10",
        }
    )
    api = api_for(daemon)
    run_at = datetime.now(UTC) + timedelta(seconds=20)
    task = await api.create_task(webhook(receiver, {"held": True}, run_at=run_at.isoformat()))
    name = f"task-{task['id']}-1"

    async def scheduled() -> bool:
        return await get_schedule(aws, name) is not None

    await eventually(scheduled)
    async with EventBridgeEmulator(
        REGION, aws.endpoint_url, [aws.group], interval_s=0.2, early_s=5
    ) as emulator:
        delivering = asyncio.create_task(emulator.run())
        try:
            await api.wait_for_status(task["id"], "completed", timeout=60)
        finally:
            delivering.cancel()
    assert emulator.delivered_total == 1
    assert await get_schedule(aws, name) is None  # ActionAfterCompletion=DELETE
    done = await api.get_task(task["id"])
    # Delivered about 15 s early, held, and started at run_at, never before.
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(done["run_at"])
    assert await metric(http, daemon, 'scheduler_sqs_messages_total{result="held"}') >= 1
    assert len(receiver.requests) == 1
