"""The EventBridge Scheduler emulator against a real moto server: which at() schedules fire,
when, into which queue, and what is left of them afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from scheduler_daemon.aws import emulator as emulator_module
from scheduler_daemon.aws.clients import scheduler_client, sqs_client
from scheduler_daemon.aws.emulator import EventBridgeEmulator
from tests.aws import REGION, ROLE_ARN, AwsResources, outage_proxy, queue_depth

# Far from the real clock on purpose: the emulator reads time only through ``now``.
T0 = datetime(2030, 1, 15, 11, 0, 0, tzinfo=UTC)


class Clock:
    """A settable ``now`` for the emulator."""

    def __init__(self, now: datetime) -> None:
        self.value = now

    def __call__(self) -> datetime:
        return self.value


class MakeEmulator(Protocol):
    async def __call__(
        self,
        now: datetime | Clock,
        *,
        groups: Sequence[str] | None = ...,
        early_s: float = ...,
        endpoint_url: str | None = ...,
        interval_s: float = ...,
    ) -> EventBridgeEmulator: ...


@pytest.fixture
async def make_emulator(aws: AwsResources) -> AsyncIterator[MakeEmulator]:
    """Open emulators on this test's group (unless told otherwise); closed at teardown."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            now: datetime | Clock,
            *,
            groups: Sequence[str] | None = (aws.group,),
            early_s: float = 0.0,
            endpoint_url: str | None = None,
            interval_s: float = 1.0,
        ) -> EventBridgeEmulator:
            clock = now if isinstance(now, Clock) else Clock(now)
            emulator = EventBridgeEmulator(
                REGION,
                endpoint_url or aws.endpoint_url,
                groups,
                interval_s=interval_s,
                early_s=early_s,
                now=clock,
            )
            return await stack.enter_async_context(emulator)

        yield make


def at(when: datetime) -> str:
    return f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"


async def create_schedule(
    aws: AwsResources,
    expression: str,
    *,
    name: str | None = None,
    group: str | None = None,
    timezone: str | None = None,
    action: str | None = "DELETE",
    state: str = "ENABLED",
    body: str | None = None,
    target_arn: str | None = None,
    extra: dict[str, Any] | None = None,
    target_extra: dict[str, Any] | None = None,
) -> str:
    name = name or f"task-{uuid.uuid4().hex[:12]}"
    target: dict[str, Any] = {"Arn": target_arn or aws.queue_arn, "RoleArn": ROLE_ARN}
    if body is not None:
        target["Input"] = body
    target.update(target_extra or {})
    args: dict[str, Any] = {
        "Name": name,
        "GroupName": group or aws.group,
        "ScheduleExpression": expression,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "State": state,
        "Target": target,
        **(extra or {}),
    }
    if timezone is not None:
        args["ScheduleExpressionTimezone"] = timezone
    if action is not None:
        args["ActionAfterCompletion"] = action
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        await scheduler.create_schedule(**args)
    return name


async def schedule_exists(aws: AwsResources, name: str, group: str | None = None) -> bool:
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        try:
            await scheduler.get_schedule(GroupName=group or aws.group, Name=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise
    return True


async def receive(aws: AwsResources, wait_s: int = 0, queue_url: str | None = None) -> list[str]:
    """The bodies of the messages waiting on the queue (deleted once read)."""
    url = queue_url or aws.queue_url
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        resp = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        messages = resp.get("Messages", [])
        for m in messages:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return [m["Body"] for m in messages]


def body_for(name: str) -> str:
    return json.dumps({"task_id": name, "kind": "wakeup"})


async def test_a_due_delete_schedule_is_delivered_and_deleted(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    body = body_for("due")
    name = await create_schedule(aws, at(T0), body=body)
    emulator = await make_emulator(T0)  # due exactly now

    assert await emulator.tick() == [name]

    assert await receive(aws) == [body]
    assert not await schedule_exists(aws, name)
    assert emulator.delivered_total == 1
    assert await emulator.tick() == []
    assert await queue_depth(aws) == (0, 0)


async def test_a_schedule_without_input_delivers_an_empty_object(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    name = await create_schedule(aws, at(T0))
    emulator = await make_emulator(T0)
    assert await emulator.tick() == [name]
    assert await receive(aws) == ["{}"]


async def test_a_future_schedule_waits_unless_early_covers_the_gap(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    body = body_for("future")
    name = await create_schedule(aws, at(T0 + timedelta(seconds=60)), body=body)

    on_time = await make_emulator(T0)
    too_little = await make_emulator(T0, early_s=59.5)
    assert await on_time.tick() == []
    assert await too_little.tick() == []
    assert await queue_depth(aws) == (0, 0)
    assert await schedule_exists(aws, name)

    early = await make_emulator(T0, early_s=60)
    assert await early.tick() == [name]
    assert await receive(aws) == [body]
    assert not await schedule_exists(aws, name)


async def test_the_clock_reaching_the_at_time_delivers(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    name = await create_schedule(aws, at(T0 + timedelta(minutes=5)), body="{}")
    clock = Clock(T0)
    emulator = await make_emulator(clock)
    assert await emulator.tick() == []
    clock.value = T0 + timedelta(minutes=5) - timedelta(microseconds=1)
    assert await emulator.tick() == []
    clock.value = T0 + timedelta(minutes=5)
    assert await emulator.tick() == [name]


@pytest.mark.parametrize("action", ["NONE", None])
async def test_a_kept_schedule_is_delivered_once_until_it_changes(
    aws: AwsResources, make_emulator: MakeEmulator, action: str | None
) -> None:
    body = body_for("kept")
    name = await create_schedule(aws, at(T0), body=body, action=action)
    emulator = await make_emulator(T0)

    assert await emulator.tick() == [name]
    assert await emulator.tick() == []
    assert await receive(aws) == [body]
    assert await queue_depth(aws) == (0, 0)
    assert await schedule_exists(aws, name)
    assert emulator.delivered_total == 1

    # An update is a new version of the schedule (a new LastModificationDate): it fires again.
    changed = body_for("kept-changed")
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        await scheduler.update_schedule(
            Name=name,
            GroupName=aws.group,
            ScheduleExpression=at(T0),
            FlexibleTimeWindow={"Mode": "OFF"},
            State="ENABLED",
            Target={"Arn": aws.queue_arn, "RoleArn": ROLE_ARN, "Input": changed},
        )
    assert await emulator.tick() == [name]
    assert await receive(aws) == [changed]


@pytest.mark.parametrize(
    ("expression", "utc"),
    [
        # Winter: CET, UTC+1.
        ("at(2030-01-15T12:00:00)", datetime(2030, 1, 15, 11, 0, 0, tzinfo=UTC)),
        # Summer: CEST, UTC+2.
        ("at(2030-07-15T12:00:00)", datetime(2030, 7, 15, 10, 0, 0, tzinfo=UTC)),
    ],
)
async def test_the_expression_timezone_is_honoured(
    aws: AwsResources, make_emulator: MakeEmulator, expression: str, utc: datetime
) -> None:
    name = await create_schedule(aws, expression, timezone="Europe/Oslo", body="{}")
    clock = Clock(utc - timedelta(seconds=1))
    emulator = await make_emulator(clock)
    assert await emulator.tick() == []
    clock.value = utc
    assert await emulator.tick() == [name]


async def test_other_groups_are_ignored_when_groups_are_given(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    other = f"other-{uuid.uuid4().hex[:10]}"
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        await scheduler.create_schedule_group(Name=other)
    elsewhere = await create_schedule(aws, at(T0), group=other, body=body_for("elsewhere"))
    here = await create_schedule(aws, at(T0), body=body_for("here"))

    emulator = await make_emulator(T0)
    assert await emulator.tick() == [here]
    assert await receive(aws) == [body_for("here")]
    assert await schedule_exists(aws, elsewhere, group=other)


async def test_every_group_is_polled_when_none_are_given(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    # Other tests' schedules share the moto server: a clock in 2001 leaves them in the future.
    when = datetime(2001, 1, 1, tzinfo=UTC)
    other = f"other-{uuid.uuid4().hex[:10]}"
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        await scheduler.create_schedule_group(Name=other)
    elsewhere = await create_schedule(aws, at(when), group=other, body=body_for("elsewhere"))
    here = await create_schedule(aws, at(when), body=body_for("here"))

    emulator = await make_emulator(when, groups=None)
    assert sorted(await emulator.tick()) == sorted([here, elsewhere])
    assert sorted(await receive(aws)) == sorted([body_for("here"), body_for("elsewhere")])


async def test_a_disabled_schedule_is_not_delivered(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    name = await create_schedule(aws, at(T0), state="DISABLED", body="{}")
    emulator = await make_emulator(T0)
    assert await emulator.tick() == []
    assert await queue_depth(aws) == (0, 0)
    assert await schedule_exists(aws, name)


async def test_rate_and_cron_schedules_are_left_alone(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    rate = await create_schedule(aws, "rate(1 minutes)", action=None, body="{}")
    cron = await create_schedule(aws, "cron(0 * * * ? *)", action=None, body="{}")
    emulator = await make_emulator(T0)
    assert await emulator.tick() == []
    assert await queue_depth(aws) == (0, 0)
    assert await schedule_exists(aws, rate)
    assert await schedule_exists(aws, cron)


async def test_listing_is_paginated(
    aws: AwsResources, make_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator_module, "_PAGE_SIZE", 2)
    names = [await create_schedule(aws, at(T0), body=body_for(str(i))) for i in range(5)]
    emulator = await make_emulator(T0)
    assert sorted(await emulator.tick()) == sorted(names)
    assert await queue_depth(aws) == (5, 0)


async def test_a_failed_delivery_is_retried_and_keeps_the_schedule(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    queue_name = f"late-{uuid.uuid4().hex[:10]}"
    account = aws.queue_arn.split(":")[4]
    target_arn = f"arn:aws:sqs:{REGION}:{account}:{queue_name}"
    name = await create_schedule(aws, at(T0), body="{}", target_arn=target_arn)
    emulator = await make_emulator(T0)

    with capture_logs() as logs:
        assert await emulator.tick() == []
    assert [e["schedule"] for e in logs if e["event"] == "emulator_delivery_failed"] == [name]
    assert await schedule_exists(aws, name)
    assert emulator.delivered_total == 0

    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        queue_url = (await sqs.create_queue(QueueName=queue_name))["QueueUrl"]
    assert await emulator.tick() == [name]
    assert await receive(aws, queue_url=queue_url) == ["{}"]
    assert not await schedule_exists(aws, name)


async def test_a_non_sqs_target_is_skipped_and_logged_once(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    lambda_arn = "arn:aws:lambda:us-east-1:123456789012:function:wake-up"
    name = await create_schedule(aws, at(T0), body="{}", target_arn=lambda_arn)
    emulator = await make_emulator(T0)
    with capture_logs() as logs:
        assert await emulator.tick() == []
        assert await emulator.tick() == []
    skipped = [e for e in logs if e["event"] == "emulator_unsupported_target"]
    assert len(skipped) == 1, logs
    assert skipped[0]["target"] == lambda_arn
    assert await schedule_exists(aws, name)


async def test_the_message_group_id_is_passed_to_a_fifo_queue(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        queue_url = (
            await sqs.create_queue(
                QueueName=f"tasks-{uuid.uuid4().hex[:10]}.fifo",
                Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
            )
        )["QueueUrl"]
        queue_arn = (
            await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
    name = await create_schedule(
        aws,
        at(T0),
        body=body_for("fifo"),
        target_arn=queue_arn,
        target_extra={"SqsParameters": {"MessageGroupId": "tenant-7"}},
    )
    emulator = await make_emulator(T0)
    assert await emulator.tick() == [name]

    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        resp = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )
    [message] = resp["Messages"]
    assert message["Body"] == body_for("fifo")
    assert message.get("Attributes", {}).get("MessageGroupId") == "tenant-7"


async def test_start_and_end_dates_bound_delivery(
    aws: AwsResources, make_emulator: MakeEmulator
) -> None:
    later = await create_schedule(
        aws, at(T0), body="{}", extra={"StartDate": T0 + timedelta(minutes=1)}
    )
    ended = await create_schedule(
        aws, at(T0), body="{}", extra={"EndDate": T0 - timedelta(minutes=1)}
    )
    clock = Clock(T0)
    emulator = await make_emulator(clock)
    assert await emulator.tick() == []
    clock.value = T0 + timedelta(minutes=1)
    assert await emulator.tick() == [later]
    assert await schedule_exists(aws, ended)


class CountingEmulator(EventBridgeEmulator):
    """Signals every finished pass, so a test can await passes instead of sleeping."""

    ticks = 0
    ticked: asyncio.Condition

    async def tick(self) -> list[str]:
        try:
            return await super().tick()
        finally:
            async with self.ticked:
                self.ticks += 1
                self.ticked.notify_all()

    async def wait_ticks(self, n: int) -> None:
        async with asyncio.timeout(30), self.ticked:
            await self.ticked.wait_for(lambda: self.ticks >= n)


async def test_run_survives_an_outage_and_then_delivers(aws: AwsResources) -> None:
    when = datetime(2001, 1, 1, tzinfo=UTC)
    name = await create_schedule(aws, at(when), body=body_for("after-outage"))
    async with outage_proxy(aws.endpoint_url) as proxy:
        await proxy.down()
        emulator = CountingEmulator(
            REGION, proxy.endpoint_url, None, interval_s=0.05, now=lambda: when
        )
        emulator.ticked = asyncio.Condition()
        async with emulator:
            with capture_logs() as logs:
                runner = asyncio.create_task(emulator.run())
                try:
                    await emulator.wait_ticks(2)  # both failed: listing the groups raised
                    assert emulator.delivered_total == 0
                    await proxy.up()
                    assert await receive(aws, wait_s=20) == [body_for("after-outage")]
                finally:
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
    assert any(e["event"] == "emulator_tick_failed" for e in logs), logs
    assert emulator.delivered_total == 1
    assert not await schedule_exists(aws, name)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        EventBridgeEmulator(REGION, "")
    with pytest.raises(ValueError, match="interval_s"):
        EventBridgeEmulator(REGION, "http://127.0.0.1:1", interval_s=0)
    with pytest.raises(ValueError, match="early_s"):
        EventBridgeEmulator(REGION, "http://127.0.0.1:1", early_s=-1)


async def test_tick_needs_the_clients_open() -> None:
    emulator = EventBridgeEmulator(REGION, "http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="async with"):
        await emulator.tick()
