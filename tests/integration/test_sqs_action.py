"""The ``sqs`` action against a real moto server, through aiobotocore as in production."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from scheduler_daemon.actions.base import ActionContext
from scheduler_daemon.actions.sqs import SqsAction, SqsOptions, SqsPayload
from scheduler_daemon.aws.clients import sqs_client
from tests.aws import REGION, AwsResources

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef


@asynccontextmanager
async def no_transaction() -> AsyncIterator[None]:
    raise AssertionError("the sqs action does not open a transaction")
    yield  # pragma: no cover


def context() -> ActionContext:
    return ActionContext(
        task_id=uuid.uuid4(),
        attempt=1,
        max_attempts=3,
        action="sqs",
        log=structlog.get_logger(),
        _transaction=no_transaction,
    )


@pytest.fixture
async def action(moto_endpoint: str) -> AsyncIterator[SqsAction]:
    action = SqsAction(SqsOptions(region=REGION, endpoint_url=moto_endpoint))
    await action.start()
    try:
        yield action
    finally:
        await action.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def create_fifo_queue(endpoint_url: str) -> str:
    async with sqs_client(REGION, endpoint_url) as sqs:
        queue = await sqs.create_queue(
            QueueName=f"tasks-{uuid.uuid4().hex[:10]}.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
        )
    return queue["QueueUrl"]


async def receive(
    endpoint_url: str, queue_url: str, wait_s: int = 0, max_messages: int = 10
) -> list[MessageTypeDef]:
    async with sqs_client(REGION, endpoint_url) as sqs:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )
    return response.get("Messages", [])


def payload(**fields: Any) -> SqsPayload:
    return SqsPayload.model_validate(fields)


async def test_message_with_attributes_and_delay_is_received(
    action: SqsAction, aws: AwsResources
) -> None:
    result = await action.run(
        payload(
            queue_url=aws.queue_url,
            body="hello, queue",
            message_attributes={"kind": "greeting", "count": 3, "ratio": 0.25},
            delay_s=2,
        ),
        context(),
    )

    assert result.ok, result.error
    message_id = result.result["message_id"]
    assert result.output == f"message {message_id} sent"
    assert "sequence_number" not in result.result
    assert "hello, queue" not in (result.output or "")
    # Delayed: not there at once, delivered within the long poll.
    assert await receive(aws.endpoint_url, aws.queue_url) == []
    messages = await receive(aws.endpoint_url, aws.queue_url, wait_s=10)
    assert len(messages) == 1
    message = messages[0]
    assert message["MessageId"] == message_id
    assert message["Body"] == "hello, queue"
    attributes = message["MessageAttributes"]
    assert attributes == {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "ratio": {"DataType": "Number", "StringValue": "0.25"},
    }


async def test_json_body_is_sent_as_compact_json(action: SqsAction, aws: AwsResources) -> None:
    body = {"order": 42, "items": ["a", "b"], "note": "café"}
    result = await action.run(payload(queue_url=aws.queue_url, body=body), context())

    assert result.ok, result.error
    messages = await receive(aws.endpoint_url, aws.queue_url, wait_s=5)
    assert [m["Body"] for m in messages] == ['{"order":42,"items":["a","b"],"note":"café"}']
    assert json.loads(messages[0]["Body"]) == body
    assert "MessageAttributes" not in messages[0]


async def test_fifo_group_and_dedup_id(action: SqsAction, aws: AwsResources) -> None:
    queue_url = await create_fifo_queue(aws.endpoint_url)
    fields = {
        "queue_url": queue_url,
        "body": "first",
        "message_group_id": "tenant-1",
        "message_deduplication_id": "order-1",
    }

    first = await action.run(payload(**fields), context())
    again = await action.run(payload(**{**fields, "body": "duplicate"}), context())
    other = await action.run(
        payload(**{**fields, "body": "second", "message_deduplication_id": "order-2"}),
        context(),
    )

    for result in (first, again, other):
        assert result.ok, result.error
        assert result.result["sequence_number"]
    messages = await receive(aws.endpoint_url, queue_url, wait_s=5)
    assert [m["Body"] for m in messages] == ["first", "second"]
    assert messages[0]["MessageId"] == first.result["message_id"]
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"tenant-1"}
    assert [m["Attributes"]["MessageDeduplicationId"] for m in messages] == [
        "order-1",
        "order-2",
    ]


async def test_nonexistent_queue_fails_without_retry(action: SqsAction, moto_endpoint: str) -> None:
    queue_url = f"{moto_endpoint}/123456789012/missing-{uuid.uuid4().hex[:10]}"

    result = await action.run(payload(queue_url=queue_url, body="secret body"), context())

    assert not result.ok
    assert not result.retryable
    assert result.error is not None
    assert "AWS.SimpleQueueService.NonExistentQueue" in result.error
    assert "secret body" not in result.error
    assert "secret body" not in (result.output or "")


async def test_fifo_refusal_by_sqs_is_not_retried(action: SqsAction, aws: AwsResources) -> None:
    """No dedup id on a queue without content-based deduplication: SQS refuses it."""
    queue_url = await create_fifo_queue(aws.endpoint_url)

    result = await action.run(
        payload(queue_url=queue_url, body="x", message_group_id="g"), context()
    )

    assert not result.ok
    assert not result.retryable
    assert result.error is not None
    assert "InvalidParameterValue" in result.error


async def test_unreachable_endpoint_is_retryable(moto_endpoint: str, closed_port: int) -> None:
    # moto_endpoint: the session's test credentials are in the environment.
    endpoint = f"http://127.0.0.1:{closed_port}"
    action = SqsAction(SqsOptions(region=REGION, endpoint_url=endpoint))
    try:
        result = await action.run(
            payload(queue_url=f"{endpoint}/123456789012/tasks", body="secret body"), context()
        )
    finally:
        await action.close()

    assert not result.ok
    assert result.retryable
    assert result.error is not None
    assert "EndpointConnectionError" in result.error
    assert "secret body" not in result.error


async def test_run_before_start_opens_the_client_and_close_is_idempotent(
    moto_endpoint: str, aws: AwsResources
) -> None:
    action = SqsAction(lambda: SqsOptions(region=REGION, endpoint_url=moto_endpoint))
    try:
        result = await action.run(payload(queue_url=aws.queue_url, body="lazy"), context())
        assert result.ok, result.error
    finally:
        await action.close()
    await action.close()

    messages = await receive(aws.endpoint_url, aws.queue_url, wait_s=5)
    assert [m["Body"] for m in messages] == ["lazy"]
