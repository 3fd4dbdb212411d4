"""The ``sqs`` action: send one message to an SQS queue (standard or FIFO).

Throttling, 5xx answers and transport errors retry; any other refusal (a missing queue, an
invalid parameter, access denied) fails at once. Errors and output never hold the body.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from scheduler_daemon.actions.base import ActionContext, ActionResult
from scheduler_daemon.aws.clients import error_code, is_throttling

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

MAX_MESSAGE_BYTES = 256 * 1024  # SQS's message size limit (the queue default)
MAX_ATTRIBUTES = 10
MAX_ID_LENGTH = 128
MAX_DELAY_S = 900
ERROR_MESSAGE_LIMIT = 300
REDACT_MIN_LENGTH = 8

_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")  # FIFO names end in .fifo, 80 chars in all
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_RESERVED_PREFIXES = ("aws.", "amazon.")
# Group and deduplication ids: 1..128 characters, letters, digits and ASCII punctuation.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")
# Characters SQS accepts in a body or string attribute (XML 1.0's Char production).
_INVALID_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_NUMBER_DIGITS = 38
_MAX_NUMBER = Decimal("1e126")
_MIN_NUMBER = Decimal("1e-128")

# Codes that may succeed on a later try besides the throttling ones (usually also 5xx).
_TRANSIENT_CODES = frozenset(
    {
        "KmsThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def _check_text(value: str, what: str) -> None:
    bad = _INVALID_CHAR.search(value)
    if bad is not None:
        raise ValueError(
            f"{what} contains a character SQS does not accept (U+{ord(bad.group()):04X})"
        )


def queue_name(queue_url: str) -> str:
    """The last path segment of a queue URL."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def encode_body(body: JsonValue) -> str:
    """The message body as sent: a string as is, any other JSON value as compact JSON."""
    if isinstance(body, str):
        return body
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_number(value: int | float) -> str:
    """A Number attribute value, in plain decimal notation (no exponent)."""
    if isinstance(value, int):
        return str(value)
    return format(Decimal(repr(value)), "f")


def _attribute_name(name: str) -> str:
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise ValueError(
            "an attribute name must be 1 to 256 characters of letters, digits, '_', '-' and '.'"
        )
    if name.lower().startswith(_RESERVED_PREFIXES):
        raise ValueError("an attribute name must not start with 'AWS.' or 'Amazon.'")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise ValueError(
            "an attribute name must not start or end with '.' nor hold two '.' in a row"
        )
    return name


def _attribute_type(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("an attribute value must be a string or a number")
    return value


def _attribute_value(value: str | int | float) -> str | int | float:
    if isinstance(value, str):
        if not value:
            raise ValueError("a string attribute value must not be empty")
        _check_text(value, "the attribute value")
        return value
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError("a number attribute value must be finite")
    if number != 0 and not (_MIN_NUMBER <= abs(number) <= _MAX_NUMBER):
        raise ValueError("a number attribute value must be between 10^-128 and 10^126")
    digits = "".join(map(str, number.as_tuple().digits)).strip("0")
    if len(digits) > _MAX_NUMBER_DIGITS:
        raise ValueError(f"a number attribute value may have at most {_MAX_NUMBER_DIGITS} digits")
    return value


def _message_id(value: str | None) -> str | None:
    if value is not None and not _MESSAGE_ID.fullmatch(value):
        raise ValueError(
            f"must be 1 to {MAX_ID_LENGTH} characters of letters, digits and ASCII punctuation"
        )
    return value


AttributeName = Annotated[str, AfterValidator(_attribute_name)]
AttributeValue = Annotated[
    StrictStr | StrictInt | StrictFloat,
    BeforeValidator(_attribute_type),
    AfterValidator(_attribute_value),
]
MessageId = Annotated[str | None, AfterValidator(_message_id)]


def _field_errors(title: str, errors: list[tuple[str, str, Any]]) -> ValidationError:
    """A ValidationError whose errors sit at the given fields (a plain ValueError raised in a
    model validator would sit at the model, naming no field)."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("sqs_payload", message),
                loc=(field,),
                input=value,
            )
            for field, message, value in errors
        ],
    )


class SqsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue_url: str = Field(max_length=2048)
    body: JsonValue
    message_attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES
    )
    delay_s: Annotated[int, Field(strict=True, ge=0, le=MAX_DELAY_S)] | None = None
    message_group_id: MessageId = None
    message_deduplication_id: MessageId = None

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        expected = "must be an SQS queue URL: http(s)://<host>/<account>/<queue-name>"
        try:
            parts = urllib.parse.urlsplit(value)
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{expected} (http or https, with a host)")
        if parts.query or parts.fragment:
            raise ValueError(f"{expected} (no query string nor fragment)")
        segments = parts.path.strip("/").split("/")
        if len(segments) != 2 or not _ACCOUNT.fullmatch(segments[0]):
            raise ValueError(expected)
        name = segments[1]
        stem = name.removesuffix(".fifo")
        if len(name) > 80 or not _QUEUE_NAME.fullmatch(stem):
            raise ValueError(
                f"{expected} (a queue name is 1 to 80 characters of letters, digits, '-' and "
                "'_', ending in '.fifo' for a FIFO queue)"
            )
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: JsonValue) -> JsonValue:
        if value is None:
            raise ValueError("must not be null")
        try:
            encoded = encode_body(value)
        except ValueError:
            raise ValueError("must be a string or a JSON value (no NaN or Infinity)") from None
        if not encoded:
            raise ValueError("must not be empty")
        _check_text(encoded, "the body")
        try:
            size = len(encoded.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"is {size} bytes encoded; SQS takes at most {MAX_MESSAGE_BYTES} (256 KiB)"
            )
        return value

    @property
    def is_fifo(self) -> bool:
        return queue_name(self.queue_url).endswith(".fifo")

    @model_validator(mode="after")
    def _queue_type_rules(self) -> SqsPayload:
        errors: list[tuple[str, str, Any]] = []
        if self.is_fifo:
            if self.message_group_id is None:
                errors.append(
                    ("message_group_id", "message_group_id is required for a FIFO queue", None)
                )
            if self.delay_s is not None:
                errors.append(
                    (
                        "delay_s",
                        "delay_s is not allowed for a FIFO queue (SQS has no per-message delay "
                        "there; set the queue's DelaySeconds instead)",
                        self.delay_s,
                    )
                )
        elif self.message_deduplication_id is not None:
            errors.append(
                (
                    "message_deduplication_id",
                    "message_deduplication_id is only allowed for a FIFO queue (a queue URL "
                    "ending in '.fifo')",
                    self.message_deduplication_id,
                )
            )
        if errors:
            raise _field_errors(type(self).__name__, errors)
        return self

    def message_body(self) -> str:
        return encode_body(self.body)

    def sqs_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        attributes: dict[str, MessageAttributeValueTypeDef] = {}
        for name, value in self.message_attributes.items():
            if isinstance(value, str):
                attributes[name] = {"DataType": "String", "StringValue": value}
            else:
                attributes[name] = {"DataType": "Number", "StringValue": format_number(value)}
        return attributes


@dataclass(frozen=True, slots=True)
class SqsOptions:
    region: str = "us-east-1"
    endpoint_url: str | None = None


class SqsAction:
    name: ClassVar[str] = "sqs"
    payload_model: ClassVar[type[BaseModel]] = SqsPayload

    def __init__(self, options: Callable[[], SqsOptions] | SqsOptions | None = None) -> None:
        if options is None:
            options = SqsOptions()
        if isinstance(options, SqsOptions):
            fixed = options
            self._options: Callable[[], SqsOptions] = lambda: fixed
        else:
            self._options = options
        self._stack: AsyncExitStack | None = None
        self._client: SQSClient | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._open()

    async def _open(self) -> SQSClient:
        """The client, opened on first use (``start`` opens it ahead of the first task)."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                options = self._options()
                from scheduler_daemon.aws.clients import sqs_client  # the SDK, on first use

                stack = AsyncExitStack()
                client = await stack.enter_async_context(
                    sqs_client(options.region, options.endpoint_url)
                )
                self._stack, self._client = stack, client
            return self._client

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult:
        assert isinstance(payload, SqsPayload)
        body = payload.message_body()
        request: dict[str, Any] = {"QueueUrl": payload.queue_url, "MessageBody": body}
        if payload.message_attributes:
            request["MessageAttributes"] = payload.sqs_attributes()
        if payload.delay_s is not None:
            request["DelaySeconds"] = payload.delay_s
        if payload.message_group_id is not None:
            request["MessageGroupId"] = payload.message_group_id
        if payload.message_deduplication_id is not None:
            request["MessageDeduplicationId"] = payload.message_deduplication_id
        target = queue_name(payload.queue_url)
        try:
            client = await self._open()
            response = await client.send_message(**request)
        except ClientError as exc:
            return _client_error(exc, target, body)
        except ParamValidationError as exc:
            # botocore refused the request before sending it: retrying cannot help.
            return ActionResult.failure(
                f"SQS SendMessage to {target}: invalid request: {_redact(str(exc), body)}",
                retryable=False,
            )
        except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            return ActionResult.failure(
                f"SQS SendMessage to {target}: {type(exc).__name__}: {_redact(str(exc), body)}",
                retryable=True,
            )
        message_id = response["MessageId"]
        result: dict[str, Any] = {"message_id": message_id}
        sequence_number = response.get("SequenceNumber")
        if payload.is_fifo and sequence_number:
            result["sequence_number"] = sequence_number
        return ActionResult.success(output=f"message {message_id} sent", result=result)


def _redact(text: str, body: str) -> str:
    """``text`` without the message body in it, cut short. AWS does not echo bodies in its
    errors; this guards against one that does (bodies too short to be told apart from the
    words around them are left alone)."""
    if len(body) >= REDACT_MIN_LENGTH and body in text:
        text = text.replace(body, "<message body>")
    if len(text) > ERROR_MESSAGE_LIMIT:
        text = text[:ERROR_MESSAGE_LIMIT] + "..."
    return text


def classify(exc: ClientError) -> bool:
    """Whether an SQS error answer is worth another try."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return is_throttling(exc) or error_code(exc) in _TRANSIENT_CODES or status >= 500


def _client_error(exc: ClientError, target: str, body: str) -> ActionResult:
    code = error_code(exc) or "unknown error"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = str(exc.response.get("Error", {}).get("Message", "") or "")
    error = f"SQS SendMessage to {target} failed: {code}"
    if status:
        error += f" (HTTP {status})"
    if message:
        error += f": {_redact(message, body)}"
    return ActionResult.failure(error, retryable=classify(exc))
