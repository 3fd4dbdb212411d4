"""Payload validation of the ``sqs`` action: valid standard and FIFO payloads, and every
invalid payload names its field."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from scheduler_daemon.actions.base import ActionRegistry, PayloadInvalid
from scheduler_daemon.actions.sqs import (
    MAX_MESSAGE_BYTES,
    SqsAction,
    SqsPayload,
    classify,
    encode_body,
    format_number,
)

QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
FIFO = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"


def fields_of(payload: dict[str, Any]) -> set[str]:
    """The top-level field of each error of an invalid payload (pydantic's ``loc``)."""
    with pytest.raises(ValidationError) as info:
        SqsPayload.model_validate(payload)
    errors = info.value.errors()
    assert errors
    return {str(e["loc"][0]) for e in errors}


def error_text(payload: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        SqsPayload.model_validate(payload)
    return str(info.value)


# --- valid payloads ---------------------------------------------------------------------


def test_minimal_standard_payload() -> None:
    payload = SqsPayload.model_validate({"queue_url": QUEUE, "body": "hello"})
    assert not payload.is_fifo
    assert payload.message_body() == "hello"
    assert payload.message_attributes == {}
    assert payload.delay_s is None
    assert payload.message_group_id is None
    assert payload.message_deduplication_id is None


def test_full_standard_payload() -> None:
    payload = SqsPayload.model_validate(
        {
            "queue_url": QUEUE,
            "body": "hello",
            "message_attributes": {"kind": "order", "count": 3, "ratio": 0.5, "a.b-c_d": "x"},
            "delay_s": 900,
            "message_group_id": "tenant-7",  # fair queues: a group id on a standard queue
        }
    )
    assert payload.sqs_attributes() == {
        "kind": {"DataType": "String", "StringValue": "order"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "ratio": {"DataType": "Number", "StringValue": "0.5"},
        "a.b-c_d": {"DataType": "String", "StringValue": "x"},
    }


@pytest.mark.parametrize("delay", [0, 1, 900])
def test_delay_bounds_are_accepted(delay: int) -> None:
    assert SqsPayload.model_validate({"queue_url": QUEUE, "body": "x", "delay_s": delay})


def test_fifo_payload() -> None:
    payload = SqsPayload.model_validate(
        {
            "queue_url": FIFO,
            "body": {"id": 1},
            "message_group_id": "g-1",
            "message_deduplication_id": "order-1:created",
        }
    )
    assert payload.is_fifo
    assert payload.message_body() == '{"id":1}'


def test_fifo_payload_without_dedup_id() -> None:
    """Content-based deduplication on the queue makes the id optional."""
    assert SqsPayload.model_validate({"queue_url": FIFO, "body": "x", "message_group_id": "g"})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5000/123456789012/tasks",  # moto / LocalStack
        "https://sqs.us-east-1.amazonaws.com/123456789012/a",
        "https://sqs.us-east-1.amazonaws.com/123456789012/tasks/",
        "https://sqs.us-east-1.amazonaws.com/123456789012/" + "q" * 80,
        "https://sqs.us-east-1.amazonaws.com/123456789012/" + "q" * 75 + ".fifo",
    ],
)
def test_queue_urls_accepted(url: str) -> None:
    extra = {"message_group_id": "g"} if url.endswith(".fifo") else {}
    assert SqsPayload.model_validate({"queue_url": url, "body": "x", **extra})


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ("plain text", "plain text"),
        ('{"already": "json"}', '{"already": "json"}'),
        ({"a": [1, 2, None], "b": "é"}, '{"a":[1,2,null],"b":"é"}'),
        ([1, "two"], '[1,"two"]'),
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
    ],
)
def test_bodies_are_encoded(body: Any, sent: str) -> None:
    payload = SqsPayload.model_validate({"queue_url": QUEUE, "body": body})
    assert payload.message_body() == sent
    assert encode_body(body) == sent


def test_body_at_the_size_limit_is_accepted() -> None:
    assert SqsPayload.model_validate({"queue_url": QUEUE, "body": "x" * MAX_MESSAGE_BYTES})


def test_ten_attributes_are_accepted() -> None:
    attributes = {f"a{i}": i for i in range(10)}
    assert SqsPayload.model_validate(
        {"queue_url": QUEUE, "body": "x", "message_attributes": attributes}
    )


@pytest.mark.parametrize("value", [10**38 - 1, -(10**125), 1e126, 1e-128, 0, 0.0, -2.5])
def test_numbers_within_sqs_range_are_accepted(value: int | float) -> None:
    assert SqsPayload.model_validate(
        {"queue_url": QUEUE, "body": "x", "message_attributes": {"n": value}}
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e20, "100000000000000000000"),
        (1.25e-5, "0.0000125"),
        (-7, "-7"),
        (10**37, "1" + "0" * 37),
    ],
)
def test_numbers_are_sent_without_exponent(value: int | float, text: str) -> None:
    assert format_number(value) == text


def test_registry_stores_and_parses_the_payload() -> None:
    registry = ActionRegistry()
    registry.register(SqsAction())
    stored = registry.validate(
        "sqs",
        {
            "queue_url": FIFO,
            "body": {"k": [1]},
            "message_attributes": {"n": 1.5, "s": "v"},
            "message_group_id": "g",
        },
    )
    assert stored == {
        "queue_url": FIFO,
        "body": {"k": [1]},
        "message_attributes": {"n": 1.5, "s": "v"},
        "message_group_id": "g",
    }
    parsed = registry.parse("sqs", stored)
    assert isinstance(parsed, SqsPayload)
    assert parsed.message_body() == '{"k":[1]}'


# --- invalid payloads name their field ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "orders",
        "ftp://sqs.us-east-1.amazonaws.com/123456789012/orders",
        "https:///123456789012/orders",
        "https://sqs.us-east-1.amazonaws.com/orders",
        "https://sqs.us-east-1.amazonaws.com/",
        "https://sqs.us-east-1.amazonaws.com/123456789012/orders/extra",
        "https://sqs.us-east-1.amazonaws.com/123456789012/ord ers",
        "https://sqs.us-east-1.amazonaws.com/123456789012/orders?x=1",
        "https://sqs.us-east-1.amazonaws.com/123456789012/orders#frag",
        "https://sqs.us-east-1.amazonaws.com/123456789012/.fifo",
        "https://sqs.us-east-1.amazonaws.com/123456789012/" + "q" * 81,
        "https://sqs.us-east-1.amazonaws.com/123456789012/" + "q" * 76 + ".fifo",
        "https://sqs.us-east-1.amazonaws.com/1234/5678/orders",
    ],
)
def test_bad_queue_urls_name_the_field(url: str) -> None:
    assert fields_of({"queue_url": url, "body": "x"}) == {"queue_url"}


def test_bad_queue_url_message_shows_the_expected_form() -> None:
    assert "<account>/<queue-name>" in error_text({"queue_url": "https://x.test/q", "body": "x"})


@pytest.mark.parametrize("queue_url", [None, 5, ["u"]])
def test_queue_url_must_be_a_string(queue_url: Any) -> None:
    assert fields_of({"queue_url": queue_url, "body": "x"}) == {"queue_url"}


def test_missing_fields_are_named() -> None:
    assert fields_of({}) == {"queue_url", "body"}
    assert fields_of({"queue_url": QUEUE}) == {"body"}


@pytest.mark.parametrize(
    "body",
    [
        None,
        "",
        "\x00nul",
        "bad \ud800 surrogate",
        float("nan"),
        {"x": float("inf")},
        "x" * (MAX_MESSAGE_BYTES + 1),
        "é" * (MAX_MESSAGE_BYTES // 2 + 1),  # two bytes each in UTF-8
        {"x": "y" * MAX_MESSAGE_BYTES},  # the JSON encoding is over the limit
    ],
)
def test_bad_bodies_name_the_field(body: Any) -> None:
    assert fields_of({"queue_url": QUEUE, "body": body}) == {"body"}


def test_oversized_body_error_states_the_limit_without_the_body() -> None:
    text = error_text({"queue_url": QUEUE, "body": "secret" * 50_000})
    assert "262144" in text
    assert "secretsecret" not in text.split("input_value")[0]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "n" * 257,
        "has space",
        "slash/",
        "ünï",
        "AWS.trace",
        "aws.trace",
        "Amazon.x",
        "AMAZON.x",
        ".leading",
        "trailing.",
        "two..dots",
    ],
)
def test_bad_attribute_names_name_the_field(name: str) -> None:
    payload = {"queue_url": QUEUE, "body": "x", "message_attributes": {name: "v"}}
    assert fields_of(payload) == {"message_attributes"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "\x01",
        True,
        None,
        [1],
        {"DataType": "String"},
        b"bytes",
        float("nan"),
        float("inf"),
        1e127,
        1e-129,
        10**38 + 1,  # 39 significant digits
    ],
)
def test_bad_attribute_values_name_the_attribute(value: Any) -> None:
    payload = {"queue_url": QUEUE, "body": "x", "message_attributes": {"key": value}}
    with pytest.raises(ValidationError) as info:
        SqsPayload.model_validate(payload)
    locs = {tuple(e["loc"][:2]) for e in info.value.errors()}
    assert locs == {("message_attributes", "key")}


def test_more_than_ten_attributes_name_the_field() -> None:
    attributes = {f"a{i}": i for i in range(11)}
    payload = {"queue_url": QUEUE, "body": "x", "message_attributes": attributes}
    assert fields_of(payload) == {"message_attributes"}


@pytest.mark.parametrize("delay", [-1, 901, 1.5, "10", True])
def test_bad_delays_name_the_field(delay: Any) -> None:
    assert fields_of({"queue_url": QUEUE, "body": "x", "delay_s": delay}) == {"delay_s"}


@pytest.mark.parametrize("field", ["message_group_id", "message_deduplication_id"])
@pytest.mark.parametrize("value", ["", "g" * 129, "with space", "ünï", 7])
def test_bad_fifo_ids_name_the_field(field: str, value: Any) -> None:
    payload = {"queue_url": FIFO, "body": "x", "message_group_id": "g", field: value}
    assert fields_of(payload) == {field}


def test_fifo_ids_accept_punctuation_up_to_128_characters() -> None:
    assert SqsPayload.model_validate(
        {
            "queue_url": FIFO,
            "body": "x",
            "message_group_id": "g" * 128,
            "message_deduplication_id": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        }
    )


def test_fifo_queue_requires_a_group_id() -> None:
    assert fields_of({"queue_url": FIFO, "body": "x"}) == {"message_group_id"}
    assert "message_group_id is required for a FIFO queue" in error_text(
        {"queue_url": FIFO, "body": "x"}
    )


def test_fifo_queue_refuses_a_delay() -> None:
    payload = {"queue_url": FIFO, "body": "x", "message_group_id": "g", "delay_s": 5}
    assert fields_of(payload) == {"delay_s"}
    assert "delay_s is not allowed for a FIFO queue" in error_text(payload)


def test_fifo_rules_report_every_field_at_once() -> None:
    assert fields_of({"queue_url": FIFO, "body": "x", "delay_s": 0}) == {
        "message_group_id",
        "delay_s",
    }


def test_standard_queue_refuses_a_dedup_id() -> None:
    payload = {"queue_url": QUEUE, "body": "x", "message_deduplication_id": "d"}
    assert fields_of(payload) == {"message_deduplication_id"}
    assert "message_deduplication_id is only allowed for a FIFO queue" in error_text(payload)


def test_unknown_field_is_named() -> None:
    assert fields_of({"queue_url": QUEUE, "body": "x", "colour": "red"}) == {"colour"}


def test_registry_prefixes_the_fields_with_payload() -> None:
    registry = ActionRegistry()
    registry.register(SqsAction())
    with pytest.raises(PayloadInvalid) as info:
        registry.validate("sqs", {"queue_url": FIFO, "body": "x", "delay_s": 3})
    assert sorted(e.field for e in info.value.errors) == [
        "payload.delay_s",
        "payload.message_group_id",
    ]


# --- error classification ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("RequestThrottled", 400, True),
        ("ThrottlingException", 400, True),
        ("KmsThrottled", 400, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("SomethingNew", 502, True),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, False),
        ("QueueDoesNotExist", 400, False),
        ("InvalidParameterValue", 400, False),
        ("AccessDenied", 403, False),
        ("InvalidMessageContents", 400, False),
    ],
)
def test_client_errors_are_classified(code: str, status: int, retryable: bool) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    exc = ClientError(response, "SendMessage")
    assert classify(exc) is retryable
