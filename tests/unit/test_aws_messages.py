"""The wake-up message format and the publisher's pure decisions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from scheduler_daemon.aws.clients import queue_arn_from_url, queue_url_from_arn
from scheduler_daemon.aws.consumer import MalformedMessage, parse_body
from scheduler_daemon.aws.publisher import (
    at_expression,
    delay_seconds,
    message_body,
    schedule_name,
)


def test_message_round_trip_carries_only_id_and_series() -> None:
    task_id = uuid.uuid4()
    body = message_body(task_id, 3)
    assert json.loads(body) == {"task_id": str(task_id), "series": 3}
    assert parse_body(body) == (task_id, 3)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[]",
        "{}",
        "{not json",
        '{"task_id": "x", "series": 1}',
        f'{{"task_id": "{uuid.UUID(int=1)}"}}',
        f'{{"task_id": "{uuid.UUID(int=1)}", "series": 0}}',
        f'{{"task_id": "{uuid.UUID(int=1)}", "series": true}}',
        f'{{"task_id": "{uuid.UUID(int=1)}", "series": "1"}}',
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_body(body)


def test_schedule_name_is_deterministic_and_fits_eventbridge() -> None:
    task_id = uuid.UUID("0b9c7d5e-8a3f-4f7e-9a51-2f3c4d5e6f70")
    assert schedule_name(task_id, 1) == f"task-{task_id}-1"
    assert len(schedule_name(task_id, 2**31 - 1)) <= 64


def test_at_expression_is_utc_and_never_early() -> None:
    oslo = datetime(2026, 3, 29, 3, 30, 0, tzinfo=UTC)
    assert at_expression(oslo) == "at(2026-03-29T03:30:00)"
    assert at_expression(datetime(2026, 1, 1, 23, 59, 59, 1, tzinfo=UTC)) == (
        "at(2026-01-02T00:00:00)"
    )


@pytest.mark.parametrize(
    ("due_in_s", "delay"), [(-5.0, 0), (0.0, 0), (0.9, 0), (1.5, 1), (899.9, 899), (5000.0, 900)]
)
def test_delay_seconds_rounds_down_within_sqs_limit(due_in_s: float, delay: int) -> None:
    assert delay_seconds(due_in_s) == delay


def test_queue_arn_and_url_convert_both_ways() -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/scheduler-tasks"
    arn = queue_arn_from_url(url, "eu-west-1")
    assert arn == "arn:aws:sqs:eu-west-1:123456789012:scheduler-tasks"
    assert queue_url_from_arn(arn, None) == url
    assert queue_url_from_arn(arn, "http://127.0.0.1:5000/") == (
        "http://127.0.0.1:5000/123456789012/scheduler-tasks"
    )
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        queue_url_from_arn("arn:aws:sns:eu-west-1:1:t", None)
