"""The wake-up message and schedule formats of the eventbridge backend.

A message is ``{"task_id": ..., "series": n}``: the task and the scheduling (its
``wake_version``) the message was published for, never the payload. Any other body (not that
JSON, too long, nested too deeply, an id that is not a UUID, a series that is not an integer
the ``wake_version`` column holds) is malformed; the reason says why without quoting the body.
A schedule is named after the task and version it wakes, so that a repeated create finds the
first one.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler_daemon.engine.wakeups import Delivery, Malformed, WakeUp

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

MAX_DELAY_S = 900  # SQS's longest DelaySeconds
# A wake-up is about 80 characters; anything much longer is not one (and is not decoded).
MAX_BODY_CHARS = 1024
MAX_SERIES = 2**31 - 1  # wake_version is an integer column (the claim's $2::int[])
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def schedule_name(task_id: uuid.UUID, version: int) -> str:
    """The at() schedule of one scheduling of a task: deterministic, so a repeated create
    after a lost answer finds the first one (at most 64 characters)."""
    return f"task-{task_id}-{version}"


def message_body(task_id: uuid.UUID, version: int) -> str:
    """The wake-up message: the task's id and its scheduling (``series``), never the payload."""
    return json.dumps({"task_id": str(task_id), "series": version}, separators=(",", ":"))


def at_expression(when: datetime) -> str:
    """``at(yyyy-mm-ddThh:mm:ss)`` in UTC (seconds rounded up: never before ``when``)."""
    when = when.astimezone(UTC)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({when:%Y-%m-%dT%H:%M:%S})"


def delay_seconds(due_in_s: float) -> int:
    """DelaySeconds for a task due in ``due_in_s``: whole seconds, rounded down (the message
    arrives up to a second early and the consumer holds it to run_at)."""
    return max(0, min(MAX_DELAY_S, math.floor(due_in_s)))


def delivery(message: MessageTypeDef) -> Delivery:
    """A received SQS message: a wake-up, or malformed."""
    receipt = message.get("ReceiptHandle", "")
    body = message.get("Body", "")
    try:
        task_id, series = parse_body(body)
    except MalformedMessage as exc:
        return Malformed(receipt, message.get("MessageId"), str(exc), len(body))
    return WakeUp(receipt, task_id, series)


class MalformedMessage(ValueError):
    """A body that is not a wake-up; the reason never quotes the body."""


def parse_body(body: str) -> tuple[uuid.UUID, int]:
    """The task id and series of a wake-up message; MalformedMessage for anything else."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object")
    return _task_id(data.get("task_id")), _series(data.get("series"))


def _decode(body: str) -> Any:
    if not isinstance(body, str):
        raise MalformedMessage("no text body")
    if len(body) > MAX_BODY_CHARS:
        raise MalformedMessage(f"longer than {MAX_BODY_CHARS} characters")
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedMessage("nested too deeply") from None
    except ValueError:  # not JSON, or an integer of more digits than Python converts
        raise MalformedMessage("not JSON") from None


def _task_id(value: object) -> uuid.UUID:
    if not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise MalformedMessage("task_id is not a UUID")
    return uuid.UUID(value)


def _series(value: object) -> int:
    # bool is an int subclass: true is not series 1.
    if type(value) is not int:
        raise MalformedMessage("series is not an integer")
    if not 1 <= value <= MAX_SERIES:
        raise MalformedMessage(f"series is not between 1 and {MAX_SERIES}")
    return value
