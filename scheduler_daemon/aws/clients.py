"""aiobotocore clients for SQS and EventBridge Scheduler, built from ``aws.*`` settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig
    from types_aiobotocore_scheduler import EventBridgeSchedulerClient
    from types_aiobotocore_sqs import SQSClient

# Errors worth another try later; anything else is a request AWS refuses as such.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ("" for transport errors)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_throttling(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING_CODES


AWS_ERRORS = (BotoCoreError, ClientError, OSError, TimeoutError)


def queue_arn_from_url(queue_url: str, region: str) -> str:
    """``https://sqs.<region>.amazonaws.com/<account>/<name>`` -> the queue's ARN."""
    parts = queue_url.rstrip("/").split("/")
    if len(parts) < 2:
        raise ValueError(f"not an SQS queue URL: {queue_url!r}")
    account, name = parts[-2], parts[-1]
    return f"arn:aws:sqs:{region}:{account}:{name}"


def queue_url_from_arn(queue_arn: str, endpoint_url: str | None) -> str:
    """An SQS ARN -> the queue's URL (on ``endpoint_url`` when one is set)."""
    parts = queue_arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise ValueError(f"not an SQS queue ARN: {queue_arn!r}")
    region, account, name = parts[3], parts[4], parts[5]
    base = endpoint_url.rstrip("/") if endpoint_url else f"https://sqs.{region}.amazonaws.com"
    return f"{base}/{account}/{name}"


def _config() -> AioConfig:
    """The daemon retries AWS calls itself (a row stays unpublished until AWS accepted it), so
    the SDK's own retries are off and timeouts short: a stalled endpoint must not hold row
    locks long. (aiobotocore is imported on first use: a daemon that never talks to AWS does
    not load the SDK's service models.)"""
    from aiobotocore.config import AioConfig

    return AioConfig(
        connect_timeout=5,
        read_timeout=30,  # above the longest SQS long poll (20 s)
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=50,
    )


def _client_args(region: str, endpoint_url: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {"region_name": region, "config": _config()}
    if endpoint_url:
        args["endpoint_url"] = endpoint_url
    return args


@contextlib.asynccontextmanager
async def sqs_client(region: str, endpoint_url: str | None) -> AsyncIterator[SQSClient]:
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", **_client_args(region, endpoint_url)) as c:
        yield c


@contextlib.asynccontextmanager
async def scheduler_client(
    region: str, endpoint_url: str | None
) -> AsyncIterator[EventBridgeSchedulerClient]:
    from aiobotocore.session import get_session

    session = get_session()
    async with session.create_client("scheduler", **_client_args(region, endpoint_url)) as c:
        yield c
