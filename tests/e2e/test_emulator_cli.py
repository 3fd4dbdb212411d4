"""``scheduler-daemon dev eventbridge-emulator`` as a real process against the moto server."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler_daemon.aws.clients import scheduler_client, sqs_client
from tests.aws import CREDENTIALS, REGION, ROLE_ARN, AwsResources
from tests.e2e.conftest import STREAM_LIMIT, DaemonProcess, child_env, cli_command, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(60)
async def test_refuses_to_run_without_an_endpoint(tmp_path: Path) -> None:
    result = await run_cli("dev", "eventbridge-emulator", env=CREDENTIALS, cwd=tmp_path)
    assert result.code != 0, result
    assert "--endpoint-url" in result.stderr, result


@pytest.mark.timeout(90)
async def test_delivers_a_due_schedule_and_stops_on_sigterm(
    aws: AwsResources, tmp_path: Path
) -> None:
    name = f"due-{uuid.uuid4().hex[:10]}"
    body = f'{{"task_id": "{name}"}}'
    due = datetime.now(UTC) - timedelta(minutes=1)
    async with scheduler_client(REGION, aws.endpoint_url) as scheduler:
        await scheduler.create_schedule(
            Name=name,
            GroupName=aws.group,
            ScheduleExpression=f"at({due.strftime('%Y-%m-%dT%H:%M:%S')})",
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion="DELETE",
            Target={"Arn": aws.queue_arn, "RoleArn": ROLE_ARN, "Input": body},
        )

    proc = await asyncio.create_subprocess_exec(
        *cli_command(
            "dev",
            "eventbridge-emulator",
            "--endpoint-url",
            aws.endpoint_url,
            "--region",
            REGION,
            "--group",
            aws.group,
            "--interval",
            "0.1",
        ),
        env=child_env({**CREDENTIALS, "SCHEDULER_LOG__FORMAT": "json"}),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=STREAM_LIMIT,
    )
    emulator = DaemonProcess(proc, 0, "eventbridge-emulator")
    try:
        async with sqs_client(REGION, aws.endpoint_url) as sqs:
            resp = await sqs.receive_message(
                QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
        assert [m["Body"] for m in resp.get("Messages", [])] == [body], emulator.log_tail()
        await emulator.wait_for_log("schedule_delivered", schedule=name, group=aws.group)

        emulator.send_signal(signal.SIGTERM)
        assert await emulator.wait() == 0, emulator.log_tail()
        stopped = await emulator.wait_for_log("emulator_stopped")
        assert stopped["delivered_total"] == 1
    finally:
        await emulator.close()
